"""Several servers, one set of files: identical signatures; a rollover that never breaks validation."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

from conftest import REPO, SmartDNS
from smartdns.dnssec import keys

ZONE = dns.name.from_text("example.com.")


def rrsigs(server: SmartDNS, name: str, rdtype: str) -> list[bytes]:
    reply = server.query(name, rdtype, want_dnssec=True)
    return sorted(r.to_wire() for rrset in reply.answer + reply.authority if rrset.rdtype == dns.rdatatype.RRSIG
                  for r in rrset)


@pytest.mark.slow
def test_two_servers_and_a_restart_sign_byte_identically(tmp_path: Path) -> None:
    keys.generate(ZONE, 13, tmp_path / "keys")
    servers = []
    try:
        for index in range(2):
            work = tmp_path / f"server{index}"
            work.mkdir()
            shutil.copytree(tmp_path / "keys", work / "keys")  # each server its own copy of the same files
            servers.append(SmartDNS(work, copy_example=True, config={"dnssec": {"keys": "keys"}}).start())
        questions = [("example.com", "MX"), ("example.com", "DNSKEY"), ("example.com", "CDS"),
                     ("mx.example.com", "AAAA"),  # AAAA: one value per pool, so the same RRset on both
                     ("ns1.example.com", "A"), ("nosuchname.example.com", "A")]
        first = {q: rrsigs(servers[0], *q) for q in questions}
        assert all(first.values())
        assert {q: rrsigs(servers[1], *q) for q in questions} == first
        servers[0].stop()
        servers[0] = SmartDNS(tmp_path / "server0", config={"dnssec": {"keys": "keys"}}).start()
        assert {q: rrsigs(servers[0], *q) for q in questions} == first
    finally:
        for server in servers:
            server.stop()


SHORT_ZONE = """\
'':
  - type: NS
    ttl: 2
    values: [ns1.example.com.]
  - type: MX
    ttl: 2
    value: {exchange: mx.example.com., preference: 10}
ns1:
  type: A
  ttl: 2
  value: 192.0.2.53
mx:
  type: A
  ttl: 2
  value: 192.0.2.10
"""


class EmulatedResolver:
    """What a validating resolver holds over time: the DNSKEY RRsets it fetched within their TTL,
    and the parent's DS set, which follows the zone's CDS one step late (a registry reading CDS)."""

    def __init__(self, first_ds: set) -> None:
        self.dnskey_cache: list[tuple[float, dns.rrset.RRset]] = []
        self.parent_ds = [(0.0, first_ds)]  # (since, DS set) the parent published

    def check(self, server: SmartDNS, now: float, ttl: float) -> None:
        keyset = server.query("example.com", "DNSKEY", want_dnssec=True)
        dnskeys = next(r for r in keyset.answer if r.rdtype == dns.rdatatype.DNSKEY)
        dnskey_sigs = next(r for r in keyset.answer if r.rdtype == dns.rdatatype.RRSIG)
        # the DNSKEY RRset must validate from every DS set a resolver may still hold (DS TTL = ttl)
        for since, ds_set in self.parent_ds:
            if since >= now - ttl or since == self.parent_ds[-1][0]:
                keys_for_ds = [k for k in dnskeys if dns.dnssec.make_ds(ZONE, k, "SHA256") in ds_set]
                assert keys_for_ds, f"no DNSKEY matches the parent's DS at {now:.1f}"
                dns.dnssec.validate(dnskeys, dnskey_sigs, {ZONE: dns.rrset.from_rdata_list(ZONE, 60, keys_for_ds)})
        self.dnskey_cache = [(t, r) for t, r in self.dnskey_cache if t >= now - ttl] + [(now, dnskeys)]
        # fresh data must validate with every DNSKEY RRset still cached
        reply = server.query("mx.example.com", "A", want_dnssec=True)
        data = next(r for r in reply.answer if r.rdtype == dns.rdatatype.A)
        sigs = next(r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG)
        for _, cached in self.dnskey_cache:
            dns.dnssec.validate(data, sigs, {ZONE: cached}, now=time.time())
        # the parent acts on the CDS it sees (after a delay, as a registry does)
        cds = server.query("example.com", "CDS", want_dnssec=True)
        cds_set = {dns.rdata.from_text(1, dns.rdatatype.DS, r.to_text())
                   for rrset in cds.answer if rrset.rdtype == dns.rdatatype.CDS for r in rrset}
        if cds_set and cds_set != self.parent_ds[-1][1]:
            self.parent_ds.append((now + 1.0, cds_set))  # published a second later
        self.parent_ds = [(s, d) for s, d in self.parent_ds if s <= now + 1.0]


@pytest.mark.slow
def test_rollover_with_short_timings_never_fails_validation(tmp_path: Path) -> None:
    work = tmp_path / "server"
    work.mkdir()
    config = {"dnssec": {"keys": "keys", "dnskey_ttl": 2}, "soa": {"ttl": 2, "minimum": 2}}
    server = SmartDNS(work, zones={"example.com.": SHORT_ZONE}, config=config)
    first = keys.generate(ZONE, 13, work / "keys")
    server.start()
    try:
        resolver = EmulatedResolver({dns.dnssec.make_ds(ZONE, first.dnskey, "SHA256")})
        started = time.monotonic()
        resolver.check(server, 0.0, 2)
        rolled = subprocess.run([sys.executable, "-m", "smartdns", "dnssec", "rollover", "example.com",
                                 "--propagation", "6", "--ds-wait", "2", "--config", str(server.config_path)],
                                cwd=work, capture_output=True, text=True, timeout=60, check=False,
                                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        assert rolled.returncode == 0, rolled.stderr
        # propagation (6 s) covers how late a server takes a change up: the file watcher (1-1.5 s) and the load, on a busy machine
        old, new = sorted(keys.load(work / "keys", ZONE)[0], key=lambda k: k.timing.inactive is None)  # old: retiring
        assert old.tag == first.tag
        tags_seen = []
        deadline = old.timing.delete + 3  # until the old key is gone from the DNSKEY RRset
        while time.time() < deadline:
            now = time.monotonic() - started
            resolver.check(server, now, 2)
            reply = server.query("example.com", "DNSKEY", want_dnssec=True)
            tags_seen.append(sorted(dns.dnssec.key_id(k) for r in reply.answer
                                    if r.rdtype == dns.rdatatype.DNSKEY for k in r))
            time.sleep(0.25)
            assert time.monotonic() - started < 60
        # the DNSKEY RRset went old -> old+new -> new, and the parent followed the CDS to the new key
        steps = [tags for i, tags in enumerate(tags_seen) if i == 0 or tags != tags_seen[i - 1]]
        assert steps[-2:] == [sorted([old.tag, new.tag]), [new.tag]] and steps[0] in ([old.tag], steps[-2]), steps
        assert resolver.parent_ds[-1][1] == {dns.dnssec.make_ds(ZONE, new.dnskey, "SHA256")}
    finally:
        server.stop()


@pytest.mark.slow
def test_workers_serve_signed_answers(tmp_path: Path) -> None:
    key = keys.generate(ZONE, 13, tmp_path / "keys")
    server = SmartDNS(tmp_path, copy_example=True, config={"dnssec": {"keys": "keys"}}, args=("--workers", "2"))
    server.start()
    try:
        keyset = {ZONE: dns.rrset.from_rdata(ZONE, 3600, key.dnskey)}
        for _ in range(20):  # the kernel spreads queries over both workers
            reply = server.query("example.com", "MX", want_dnssec=True)
            mx = next(r for r in reply.answer if r.rdtype == dns.rdatatype.MX)
            sigs = next(r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG)
            dns.dnssec.validate(mx, sigs, keyset)
    finally:
        server.stop()
