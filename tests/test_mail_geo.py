"""The product's promise: domestic resolvers get the domestic exchange, others the overseas one."""

from __future__ import annotations

import subprocess
import sys

import dns.rdatatype
import pytest

from conftest import DOMESTIC, OVERSEAS, REPO

DOMESTIC_A = {"192.0.2.10"}
OVERSEAS_A = {"198.51.100.10", "198.51.100.11"}


def addresses(response, section="answer", rdtype=dns.rdatatype.A):
    return {r.address for rrset in getattr(response, section) if rrset.rdtype == rdtype for r in rrset}


@pytest.fixture
def server(smartdns, geo_mmdb):
    return smartdns(copy_example=True, config={"geodb": [str(geo_mmdb)]})


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_exchange_address_follows_the_resolver(server, tcp):
    for _ in range(10):  # the overseas pool is weighted random: every answer must come from it
        assert addresses(server.query("mx.example.com", "A", source=DOMESTIC, tcp=tcp)) == DOMESTIC_A
        assert addresses(server.query("mx.example.com", "A", source=OVERSEAS, tcp=tcp)) <= OVERSEAS_A
    aaaa = dns.rdatatype.AAAA
    assert addresses(server.query("mx.example.com", "AAAA", source=DOMESTIC, tcp=tcp), rdtype=aaaa) == {"2001:db8:c::10"}
    assert addresses(server.query("mx.example.com", "AAAA", source=OVERSEAS, tcp=tcp), rdtype=aaaa) == {"2001:db8:e::10"}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_mx_additional_section_carries_the_same_geo_choice(server, tcp):
    domestic = server.query("example.com", "MX", source=DOMESTIC, tcp=tcp)
    assert [r.exchange.to_text() for r in domestic.answer[0]] == ["mx.example.com."]
    assert addresses(domestic, "additional") == DOMESTIC_A
    overseas = server.query("example.com", "MX", source=OVERSEAS, tcp=tcp)
    assert addresses(overseas, "additional") <= OVERSEAS_A
    assert len(addresses(overseas, "additional")) == 1  # one value per answer, picked by weight


def test_weights_spread_overseas_answers(server):
    counts = {"198.51.100.10": 0, "198.51.100.11": 0}
    for _ in range(400):
        (address,) = addresses(server.query("mx.example.com", "A", source=OVERSEAS))
        counts[address] += 1
    # weight 3 : 1 -> expect ~300 : ~100; the bounds are > 6 sigma wide
    assert 220 < counts["198.51.100.10"] < 370, counts


def test_unknown_source_gets_the_catch_all(server):
    assert addresses(server.query("mx.example.com", "A", source="127.0.0.1")) <= OVERSEAS_A


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "smartdns", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_check_passes_on_shipped_zones():
    result = run_cli("check", "--zones", "zones/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 1 zone(s)")


@pytest.mark.slow
def test_explain_with_embedded_data_only():
    china = run_cli("explain", "114.114.114.114")
    assert china.returncode == 0, china.stderr
    assert "country CN" in china.stdout and "embedded" in china.stdout
    assert "answer: 192.0.2.10" in china.stdout
    us = run_cli("explain", "8.8.8.8", "mx.example.com", "A")
    assert "country US" in us.stdout
    assert "pool overseas" in us.stdout and "answer: 198.51.100.10 198.51.100.11" in us.stdout


@pytest.mark.slow
def test_check_warns_when_aaaa_bypasses_the_geo_decision(tmp_path):
    zone = (REPO / "zones" / "example.com.yaml").read_text()
    start = zone.index("  - dynamic:", zone.index("type: A"))  # the AAAA record, made static
    zone = zone[:start] + "  - ttl: 60\n    type: AAAA\n    value: 2001:db8:c::10\n" + zone[zone.index("ns1:"):]
    (tmp_path / "example.com.yaml").write_text(zone)
    result = run_cli("check", "--zones", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a problem
    assert "warning:" in result.stdout and "mx AAAA: A is dynamic but AAAA is static" in result.stdout
    assert "IPv6 senders bypass the geo decision" in result.stdout


@pytest.mark.slow
def test_config_errors_name_file_and_line(tmp_path):
    config = tmp_path / "smartdns.yaml"
    config.write_text("listen:\n  - 127.0.0.1:5353\nhealth:\n  interval: 10\n  fall: 0\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:5: fall: must be an integer >= 1, got 0" in result.stderr
    config.write_text("listen: [nowhere]\n")
    assert "listen: listen address 'nowhere' is not HOST:PORT" in run_cli("check", "--config", str(config)).stderr


@pytest.mark.slow
def test_shipped_zones_pass_octodns_validate_with_its_defaults(tmp_path):
    """Admins keep their octoDNS tooling: the example zone is valid for octoDNS itself, key order included."""
    config = tmp_path / "octodns.yaml"
    config.write_text(f"""providers:
  config:
    class: octodns.provider.yaml.YamlProvider
    directory: {REPO / "zones"}
zones:
  example.com.:
    sources: [config]
    targets: []
""")
    result = subprocess.run([sys.executable, "-m", "octodns.cmds.validate", "--config-file", str(config)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
