"""`smartdns dnssec keygen | ds | status | rollover | remove` and `smartdns check` on key files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rrset
import pytest

from conftest import EXAMPLE_ZONES
from smartdns.dnssec import keys

ZONE = dns.name.from_text("example.com.")


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartdns", *args], cwd=workdir, capture_output=True, text=True, check=False,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})


def workdir_with_zone(tmp_path: Path) -> Path:
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.com.yaml").write_text((EXAMPLE_ZONES / "example.com.yaml").read_text())
    (tmp_path / "smartdns.yaml").write_text("zones: zones\ndnssec: {keys: keys, dnskey_ttl: 300}\n")
    return tmp_path


@pytest.mark.slow
def test_keygen_ds_status(tmp_path: Path) -> None:
    work = workdir_with_zone(tmp_path)
    made = run(work, "dnssec", "keygen", "example.com", "--config", "smartdns.yaml")
    assert made.returncode == 0, made.stderr
    (key,) = keys.load(work / "keys", ZONE)[0]
    expected_ds = dns.rrset.from_rdata(ZONE, 3600, dns.dnssec.make_ds(ZONE, key.dnskey, "SHA256")).to_text()
    assert expected_ds in made.stdout and key.algorithm == 13
    ds = run(work, "dnssec", "ds", "example.com.", "--config", "smartdns.yaml")
    assert ds.stdout.strip() == expected_ds
    again = run(work, "dnssec", "keygen", "example.com", "--config", "smartdns.yaml")
    assert again.returncode == 2 and "already has key" in again.stderr and "rollover" in again.stderr
    status = run(work, "dnssec", "status", "--config", "smartdns.yaml")
    assert "example.com.: signed" in status.stdout and f"{key.path.name}: active, alg 13" in status.stdout
    assert run(work, "check", "--config", "smartdns.yaml").returncode == 0


def test_ed25519_keygen(tmp_path: Path) -> None:
    work = workdir_with_zone(tmp_path)
    assert run(work, "dnssec", "keygen", "example.com", "--algorithm", "15", "--config", "smartdns.yaml").returncode == 0
    assert [k.algorithm for k in keys.load(work / "keys", ZONE)[0]] == [15]


@pytest.mark.slow
def test_rollover_timings_follow_rfc7583(tmp_path: Path) -> None:
    work = workdir_with_zone(tmp_path)
    run(work, "dnssec", "keygen", "example.com", "--config", "smartdns.yaml")
    before = int(time.time())
    rolled = run(work, "dnssec", "rollover", "example.com", "--propagation", "60", "--ds-wait", "2m",
                 "--config", "smartdns.yaml")
    after = int(time.time())
    assert rolled.returncode == 0, rolled.stderr
    old, new = sorted(keys.load(work / "keys", ZONE)[0], key=lambda k: k.timing.inactive is None)  # old: retiring
    # pre-publication: the new key waits for propagation plus the DNSKEY TTL (300 in the config)
    assert before <= new.timing.publish <= after
    assert new.timing.activate == new.timing.publish + 60 + 300 == new.timing.sync_publish
    assert old.timing.inactive == old.timing.sync_delete == new.timing.activate
    # the old key stays until the DS wait, the largest TTL of the zone (3600, the SOA's) and propagation ran out
    assert old.timing.delete == new.timing.activate + 120 + 3600 + 60
    assert new.algorithm == old.algorithm
    busy = run(work, "dnssec", "rollover", "example.com", "--config", "smartdns.yaml")
    assert busy.returncode == 2 and "already under way" in busy.stderr


@pytest.mark.slow
def test_check_names_missing_and_mismatched_key_files(tmp_path: Path) -> None:
    work = workdir_with_zone(tmp_path)
    run(work, "dnssec", "keygen", "example.com", "--config", "smartdns.yaml")
    (key,) = keys.load(work / "keys", ZONE)[0]
    other = keys.generate(ZONE, 13, tmp_path / "elsewhere")
    key.key_path.write_text(other.key_path.read_text())
    checked = run(work, "check", "--config", "smartdns.yaml")
    assert checked.returncode == 1
    assert f"{key.key_path.name}: its DNSKEY does not match the private key in {key.path.name}" in checked.stdout
    key.path.unlink()
    checked = run(work, "check", "--config", "smartdns.yaml")
    assert checked.returncode == 1 and "no private key file" in checked.stdout
    key.key_path.unlink()
    (work / "keys" / "Kother.org.+013+00001.key").write_text("")
    assert "key files for other.org., which no zone file serves" in run(work, "check", "--config", "smartdns.yaml").stdout


def test_config_rejects_a_bad_dnssec_section(tmp_path: Path) -> None:
    work = workdir_with_zone(tmp_path)
    (work / "smartdns.yaml").write_text("zones: zones\ndnssec: {key: keys}\n")
    checked = run(work, "check", "--config", "smartdns.yaml")
    assert checked.returncode == 2 and "smartdns.yaml:2: dnssec: must be {keys: DIRECTORY" in checked.stderr
