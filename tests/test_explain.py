"""`smartdns explain` says what the server answers: NODATA and NXDOMAIN with the SOA, REFUSED outside our
zones; it says it does not know live health, and `--probe` runs the configured checks once."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dns.rcode
import dns.rdatatype

from conftest import DOMESTIC_MX, OVERSEAS_MX, REPO, Listener, free_port
from conftest import health_zone as zone


def explain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", "explain", *args], capture_output=True, text=True,
                          timeout=60, check=False)


CORP = "'':\n  - type: NS\n    values: [ns1.corp-mail.test.]\n  - type: MX\n    value: {exchange: mx.corp-mail.test., " \
       "preference: 10}\nmx:\n  type: TXT\n  value: only text here\nns1:\n  type: A\n  value: 127.0.0.53\n"


def test_explain_says_nodata_and_nxdomain_exactly_as_the_server(smartdns):
    server = smartdns(copy_example=True, zones={"corp-mail.test": CORP})
    zones = str(server.zones_dir)
    for name, rdtype, rcode, summary in [
        ("mx.corp-mail.test", "A", dns.rcode.NOERROR, "NODATA: the name exists, no record of this type"),
        ("nothing.corp-mail.test", "A", dns.rcode.NXDOMAIN, "NXDOMAIN: no such name"),
        ("nothing.example.com", "MX", dns.rcode.NXDOMAIN, "NXDOMAIN: no such name"),
    ]:
        response = server.query(name, rdtype)
        assert response.rcode() == rcode and not response.answer
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA
        result = explain("8.8.8.8", name, rdtype, "--zones", zones)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{name}. {rdtype}: {summary}" in result.stdout, result.stdout
        assert f"authority section: {soa.to_text()}" in result.stdout, result.stdout  # the same SOA, serial included
        assert "not in any zone served" not in result.stdout
    outside = explain("8.8.8.8", "www.elsewhere.test", "A", "--zones", zones)
    assert server.query("www.elsewhere.test", "A").rcode() == dns.rcode.REFUSED
    assert outside.returncode == 1 and "www.elsewhere.test. A: REFUSED: not in any zone served" in outside.stdout


def test_explain_shows_the_server_answer_sections():
    result = explain("114.114.114.114", "example.com", "MX", "--zones", str(REPO / "zones"))
    assert result.returncode == 0, result.stderr
    assert "example.com. MX: NOERROR (authoritative)" in result.stdout
    assert "answer section: example.com. 3600 IN MX 10 mx.example.com." in result.stdout
    assert "additional section: mx.example.com. 60 IN A 192.0.2.10" in result.stdout  # the domestic exchange


def test_explain_says_it_does_not_know_live_health_and_probe_checks_once(tmp_path):
    """Health checks only ever against loopback listeners: the domestic site answers, the overseas one is closed."""
    port = free_port(DOMESTIC_MX, OVERSEAS_MX)
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.com.yaml").write_text(textwrap.dedent(zone(port)))
    domestic = Listener(DOMESTIC_MX, port)
    try:
        unknown = explain("8.8.8.8", "mx.example.com", "A", "--zones", str(tmp_path / "zones"))
        assert unknown.returncode == 0, unknown.stdout + unknown.stderr
        assert "health: not known to explain: every value counts as up" in unknown.stdout
        assert "--probe runs the configured health checks once" in unknown.stdout
        assert f"answer section: mx.example.com. 5 IN A {OVERSEAS_MX}" in unknown.stdout  # US: the overseas pool
        probed = explain("8.8.8.8", "mx.example.com", "A", "--probe", "--zones", str(tmp_path / "zones"))
        assert probed.returncode == 0, probed.stdout + probed.stderr
        assert f"health: SMTP {DOMESTIC_MX}:{port} up (220 greeting)" in probed.stdout, probed.stdout
        assert f"health: SMTP {OVERSEAS_MX}:{port} DOWN (" in probed.stdout, probed.stdout
        assert "not known to explain" not in probed.stdout
        # the overseas site is down: the answer falls back to what is up, as the server would answer
        assert f"answer section: mx.example.com. 5 IN A {DOMESTIC_MX}" in probed.stdout, probed.stdout
        assert domestic.quits >= 1  # a real SMTP check ran to QUIT
    finally:
        domestic.close()
