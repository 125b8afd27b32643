"""DNSSEC building blocks: BIND key files, windowed deterministic signatures, the NSEC chain.

Every signature is checked with dnspython's validator against the zone's DNSKEY RRset.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset
import pytest

from conftest import EXAMPLE_ZONES
from smartdns.config import SoaSettings
from smartdns.dnssec import keys
from smartdns.dnssec.denial import sort_key
from smartdns.dnssec.sign import INCEPTION_SKEW, VALIDITY, WINDOW, Signer, window_at
from smartdns.dnssec.zone import apex_key_rdatasets, sign_nodes, variants
from smartdns.model import StaticRRset
from smartdns.zonefile import load_zone

ZONE = dns.name.from_text("example.com.")
NOW = 1_790_000_000  # a fixed clock: 2026-09-21


def _keyset(*zone_keys: keys.ZoneKey) -> dict:
    return {ZONE: dns.rrset.from_rdata_list(ZONE, 3600, [k.dnskey for k in zone_keys])}


def _validate(owner: dns.name.Name, rdataset, sigs, keyset: dict, now: float = NOW) -> None:
    rrset = dns.rrset.from_rdata_list(owner, rdataset.ttl, list(rdataset))
    dns.dnssec.validate(rrset, dns.rrset.from_rdata_list(owner, sigs.ttl, list(sigs)), keyset, now=now)


@pytest.mark.parametrize("algorithm", [13, 15])
def test_key_files_round_trip_in_bind_format(tmp_path: Path, algorithm: int) -> None:
    key = keys.generate(ZONE, algorithm, tmp_path, now=NOW)
    stem = f"Kexample.com.+{algorithm:03d}+{key.tag:05d}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [stem + ".key", stem + ".private"]
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    private = (tmp_path / (stem + ".private")).read_text().splitlines()
    assert private[:2] == ["Private-key-format: v1.3",
                           f"Algorithm: {algorithm} ({'ECDSAP256SHA256' if algorithm == 13 else 'ED25519'})"]
    assert "Created: 20260921141320" in private and "Activate: 20260921141320" in private
    public = (tmp_path / (stem + ".key")).read_text()
    assert f"; This is a key-signing key, keyid {key.tag}, for example.com." in public
    assert f"example.com. IN DNSKEY 257 3 {algorithm} " in public
    again = keys.read(key.path)
    assert again.dnskey == key.dnskey and again.timing == key.timing
    rrset = dns.rrset.from_text("mx.example.com.", 60, "IN", "A", "192.0.2.1")
    sigs = Signer(ZONE, [again], NOW).sign(rrset.name, rrset)
    _validate(rrset.name, rrset, sigs, _keyset(key))


def test_signatures_are_deterministic_and_windowed(tmp_path: Path) -> None:
    key = keys.generate(ZONE, 13, tmp_path, now=NOW - 86400)
    rrset = dns.rrset.from_text("example.com.", 300, "IN", "TXT", "v=spf1 mx -all")
    first = Signer(ZONE, [keys.read(key.path)], NOW).sign(rrset.name, rrset)
    later_same_window = Signer(ZONE, [keys.read(key.path)], window_at(NOW).start + WINDOW - 1).sign(rrset.name, rrset)
    assert [r.to_wire() for r in first] == [r.to_wire() for r in later_same_window]  # byte-identical
    window = window_at(NOW)
    assert window.start <= NOW < window.end
    assert first[0].inception == window.start - INCEPTION_SKEW
    assert first[0].expiration == window.start + VALIDITY
    next_window = Signer(ZONE, [key], window.end).sign(rrset.name, rrset)
    assert next_window[0].inception == window.end - INCEPTION_SKEW
    # a signature made in one window is still good two weeks into the next
    _validate(rrset.name, rrset, first, _keyset(key), now=window.end + 2 * WINDOW - 1)


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    key = keys.generate(ZONE, 13, tmp_path, now=NOW)
    other = keys.generate(ZONE, 13, tmp_path / "other", now=NOW)
    key.key_path.write_text(other.key_path.read_text())  # the public half of another key
    found, problems = keys.load(tmp_path, ZONE)
    assert found == [] and len(problems) == 1
    assert str(key.key_path) in problems[0] and "does not match the private key" in problems[0]
    key.path.write_text("Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\n")
    assert "missing field PrivateKey" in keys.load(tmp_path, ZONE)[1][0]
    key.path.unlink()
    assert "no private key file" in keys.load(tmp_path, ZONE)[1][0]


def test_timing_decides_what_is_published_and_active(tmp_path: Path) -> None:
    old = keys.generate(ZONE, 13, tmp_path, now=NOW - 10 * 86400)
    new = keys.generate(ZONE, 13, tmp_path, timing=keys.Timing(created=NOW, publish=NOW, activate=NOW + 7200,
                                                                 sync_publish=NOW + 7200))
    old = keys.with_timing(old, inactive=NOW + 7200, sync_delete=NOW + 7200, delete=NOW + 86400)
    loaded, problems = keys.load(tmp_path, ZONE)
    assert problems == [] and {k.tag for k in loaded} == {old.tag, new.tag}
    old, new = sorted(loaded, key=lambda k: k.tag != old.tag)
    assert (old.state(NOW), new.state(NOW)) == ("active", "published")
    assert (old.state(NOW + 7200), new.state(NOW + 7200)) == ("retired", "active")
    assert (old.state(NOW + 86400), new.state(NOW + 86400)) == ("removed", "active")
    apex = apex_key_rdatasets(ZONE, loaded, NOW)
    assert {dns.dnssec.key_id(k) for k in apex[dns.rdatatype.DNSKEY]} == {old.tag, new.tag}
    assert {c.key_tag for c in apex[dns.rdatatype.CDS]} == {old.tag}
    assert {c.key_tag for c in apex_key_rdatasets(ZONE, loaded, NOW + 7200)[dns.rdatatype.CDS]} == {new.tag}
    # the retired key keeps signing the DNSKEY RRset while a DS may still point at it
    between = Signer(ZONE, loaded, NOW + 7200)
    assert [k.tag for k in between.zone_keys] == [new.tag]
    assert {k.tag for k in between.key_keys} == {old.tag, new.tag}


def test_keys_removed_publish_the_delete_form(tmp_path: Path) -> None:
    key = keys.generate(ZONE, 13, tmp_path, now=NOW - 86400)
    keys.with_timing(key, sync_delete=NOW - 60)
    apex = apex_key_rdatasets(ZONE, keys.load(tmp_path, ZONE)[0], NOW)
    assert [r.to_text() for r in apex[dns.rdatatype.CDS]] == ["0 0 0 00"]
    assert [r.to_text() for r in apex[dns.rdatatype.CDNSKEY]] == ["0 3 0 AA=="]


def _example(tmp_path: Path, algorithm: int = 13):
    zone = load_zone(EXAMPLE_ZONES / "example.com.yaml", SoaSettings())
    key = keys.generate(ZONE, algorithm, tmp_path, now=NOW - 86400)
    signed = sign_nodes(zone.origin, zone.nodes, [key], zone.negative_ttl, NOW, StaticRRset)
    assert signed is not None
    return zone, key, signed


def test_every_rrset_and_nsec_of_the_example_zone_validates(tmp_path: Path) -> None:
    zone, key, (nodes, signed) = _example(tmp_path)
    keyset = _keyset(key)
    checked = 0
    for wire, node in nodes.items():
        owner = dns.name.from_wire(wire, 0)[0]
        for source in node.values():
            if isinstance(source, StaticRRset):
                _validate(owner, source.rdataset, signed.static_sigs(wire, source.rdataset), keyset)
                checked += 1
    assert checked >= 7  # SOA, NS, MX, TXT, DNSKEY, CDS, CDNSKEY, ns1 A, ns2 A
    owners = [o.to_text() for o in signed.nsec.owners]
    assert owners == ["example.com.", "mx.example.com.", "ns1.example.com.", "ns2.example.com."]
    for owner, nsec, sigs in zip(signed.nsec.owners, signed.nsec.rdatasets, signed.nsec_sigs):
        _validate(owner, nsec, sigs, keyset)
        assert nsec.ttl == zone.negative_ttl  # RFC 9077
    apex_types = signed.nsec.rdatasets[0][0].windows
    assert dns.rdtypes.ANY.NSEC.Bitmap(apex_types).to_text().split() == \
        ["NS", "SOA", "MX", "TXT", "RRSIG", "NSEC", "DNSKEY", "CDS", "CDNSKEY"]
    assert signed.nsec.rdatasets[-1][0].next == ZONE  # the chain closes at the apex
    # dynamic A and AAAA: each is one type for everyone, and each variant validates
    assert dns.rdtypes.ANY.NSEC.Bitmap(signed.nsec.rdatasets[1][0].windows).to_text().split() == \
        ["A", "AAAA", "RRSIG", "NSEC"]
    for entry in signed.dynamic.values():
        combos = variants(entry.record, 64)
        assert len(combos) == len({v.text for pool in entry.record.pools.values() for v in pool.values}
                                  | {v.text for v in entry.record.values})
        for combo in combos:
            rdataset = dns.rdataset.Rdataset(1, entry.record.rdtype, ttl=entry.record.ttl)
            for value in combo:
                rdataset.add(value.rdata)
            _validate(entry.owner, rdataset, signed.dynamic_sigs(entry.record, combo), keyset)


def test_nsec_lookups_in_canonical_order(tmp_path: Path) -> None:
    _, _, (_, signed) = _example(tmp_path)
    chain = signed.nsec
    def wire(text: str) -> bytes:
        return dns.name.from_text(text).canonicalize().to_wire()
    assert chain.matching(wire("mx.example.com.")) == 1
    assert chain.covering(wire("a.example.com.")) == 0
    assert chain.covering(wire("mz.example.com.")) == 1
    assert chain.covering(wire("a.mx.example.com.")) == 1
    assert chain.covering(wire("zzz.example.com.")) == 3
    assert sort_key(wire("*.example.com.")) < sort_key(wire("a.example.com."))
    names = sorted(["a.example.com.", "z.a.example.com.", "b.example.com.", "example.com.", "*.z.example.com."],
                   key=lambda n: sort_key(wire(n)))
    assert names == ["example.com.", "a.example.com.", "z.a.example.com.", "b.example.com.", "*.z.example.com."]


def test_variants_grow_with_max_answers_not_clients(tmp_path: Path) -> None:
    from smartdns.model import DynamicRRset, Pool, PoolValue

    values = tuple(PoolValue(f"192.0.2.{i}", dns.rdata.from_text(1, 1, f"192.0.2.{i}")) for i in range(1, 6))
    record = DynamicRRset("mx", dns.rdatatype.A, 60, {"p": Pool("p", values)}, (), values[:2], max_answers=2)
    assert len(variants(record, 64)) == 10  # C(5, 2); the plain pair is one of them
    assert len(variants(record, 4)) == 4
