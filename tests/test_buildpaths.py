"""Shortcuts of the model builder against dnspython's general way, on the same inputs.

`immutable_rdataset` fills the rdataset in one go (each rdata hashed once); it must hold what
adding the rdatas one by one holds, in the same order, the same objects, and refuse what adding
refuses. `first_in_dns_order` picks the SOA's MNAME by comparing texts; it must pick what
dnspython's name ordering picks.
"""

from __future__ import annotations

import random

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import pytest

from smartdns.model import immutable_rdataset
from smartdns.zonebuild import first_in_dns_order

TEXTS = {
    dns.rdatatype.A: ["10.0.0.1", "10.0.0.2", "192.0.2.1", "10.0.0.1"],
    dns.rdatatype.MX: ["10 mx.example.com.", "5 mx.example.com.", "10 MX.example.com.", "10 mx2.example.com."],
    dns.rdatatype.TXT: ['"a"', '"b"', '"a" "b"', '"A"'],
    dns.rdatatype.SOA: ["ns1.example.com. hostmaster.example.com. 1 2 3 4 5",
                        "ns2.example.com. hostmaster.example.com. 1 2 3 4 5",
                        "NS1.example.com. hostmaster.example.com. 1 2 3 4 5"],
    dns.rdatatype.CNAME: ["a.example.com.", "b.example.com.", "A.example.com."],
}


def one_by_one(rdtype: dns.rdatatype.RdataType, ttl: int, rdatas: list[dns.rdata.Rdata]) -> dns.rdataset.Rdataset:
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype, ttl=ttl)
    for rdata in rdatas:
        rdataset.add(rdata)
    return dns.rdataset.ImmutableRdataset(rdataset)


@pytest.mark.parametrize("seed", range(200))
def test_rdataset_in_one_go_is_the_one_added_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    rdtype = rng.choice(sorted(TEXTS))
    rdatas = [dns.rdata.from_text(dns.rdataclass.IN, rdtype, rng.choice(TEXTS[rdtype]))
              for _ in range(rng.randint(0, 5))]
    if rdatas and rng.random() < 0.1:  # another type among them: refused both ways
        rdatas.insert(rng.randrange(len(rdatas)), dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, "10.0.0.9"))
        rdtype = rdtype if rdtype != dns.rdatatype.A else dns.rdatatype.MX
    if rdatas and rdtype != dns.rdatatype.A and rng.random() < 0.05:  # another class
        rdatas.append(dns.rdata.from_text(dns.rdataclass.CH, rdtype, rng.choice(TEXTS[rdtype])))
    ttl = rng.choice([0, 300, 3600])
    try:
        expected = one_by_one(rdtype, ttl, rdatas)
    except dns.rdataset.IncompatibleTypes:
        with pytest.raises(dns.rdataset.IncompatibleTypes):
            immutable_rdataset(rdtype, ttl, rdatas)
        return
    for given in (rdatas, tuple(rdatas)):
        got = immutable_rdataset(rdtype, ttl, given)
        assert type(got) is dns.rdataset.ImmutableRdataset
        assert (got.rdclass, got.rdtype, got.covers, got.ttl) == (expected.rdclass, expected.rdtype, expected.covers,
                                                                  expected.ttl)
        assert [id(r) for r in got] == [id(r) for r in expected]  # the same objects, in the same order
        assert got == expected
        with pytest.raises(TypeError):
            got.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, TEXTS[rdtype][0]))


def test_signatures_still_checked_for_their_covered_type() -> None:
    def rrsig(covered: str) -> dns.rdata.Rdata:
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RRSIG,
                                   f"{covered} 13 2 300 20301231000000 20200101000000 1 example.com. AAAA")

    made = immutable_rdataset(dns.rdatatype.RRSIG, 300, [rrsig("A"), rrsig("A")])
    assert made.covers == dns.rdatatype.A and len(made) == 1
    with pytest.raises(dns.rdataset.DifferingCovers):
        immutable_rdataset(dns.rdatatype.RRSIG, 300, [rrsig("A"), rrsig("MX")])


LABELS = ["ns1", "ns2", "ns", "a", "b-c", "b_c", "0", "9z", "x" * 63, "NS1", "n\\.s", "é", "*"]


@pytest.mark.parametrize("seed", range(300))
def test_mname_is_the_first_name_in_dnspython_order(seed: int) -> None:
    rng = random.Random(seed)
    texts = []
    for _ in range(rng.randint(1, 4)):
        labels = [rng.choice(LABELS[:8] if rng.random() < 0.9 else LABELS) for _ in range(rng.randint(0, 3))]
        suffix = rng.choice(["example.com.", "example.net.", "com.", "ns1.example.com.", "."])
        texts.append(".".join(labels) + ("." if labels and suffix != "." else "") + suffix if labels else suffix)
    expected = min(dns.name.from_text(text) for text in texts)
    got = first_in_dns_order(tuple(texts))
    assert got == expected and got.to_text() == expected.to_text()


def test_zones_giving_the_same_address_share_one_rdata(tmp_path) -> None:
    """A and AAAA rdatas are made once for every zone that gives the address (zonebuild._address): the
    shared object is the rdata dnspython makes from the text."""
    from smartdns.config import SoaSettings
    from smartdns.model import DynamicRRset
    from smartdns.zonefile import load_zone

    zone = ("'': {type: NS, values: [ns1.example.com.]}\n"
            "mx: {dynamic: {pools: {one: {values: [{value: 'fd00::78'}]}}, rules: [{pool: one}]}, ttl: 60, type: AAAA,"
            " values: ['fd00::77']}\n")
    values = []
    for name in ("a.example", "b.example"):
        (tmp_path / f"{name}.yaml").write_text(zone.replace("example.com.", f"{name}."))
        loaded = load_zone(tmp_path / f"{name}.yaml", SoaSettings())
        (record,) = [s for node in loaded.nodes.values() for s in node.values() if isinstance(s, DynamicRRset)]
        values.append((record.values[0].rdata, record.pools["one"].values[0].rdata))
    assert values[0][0] is values[1][0] and values[0][1] is values[1][1]
    assert values[0][0] == dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.AAAA, "fd00::77")
    assert values[0][1] == dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.AAAA, "fd00::78")


def test_content_serial_is_the_hash_of_its_json() -> None:
    """The serial is the first 4 bytes of the SHA-256 of the records' JSON, sorted by name and type (as first
    written): a faster sort must not change one serial."""
    import hashlib
    import json

    from smartdns.zonebuild import content_serial

    rng = random.Random(1)
    for _ in range(200):
        records = [(rng.choice(["", "www", "mx", "a.b"]), rng.choice(["A", "MX", "TXT"]), rng.choice([60, 300]),
                    (f"10.0.0.{rng.randint(0, 9)}",), rng.choice([None, {}]), {"z": 1, "a": [1, 2]})
                   for _ in range(rng.randint(1, 6))]
        fields = ["ns1.example.", "hostmaster.example.", 1, 2, 3, 4, 5]
        canonical = json.dumps([sorted(records, key=lambda r: (r[0], r[1])), fields], sort_keys=True, default=str)
        expected = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big") or 1
        assert content_serial(records, fields) == expected


def test_names_with_ancestors_stopping_at_a_known_one_finds_them_all() -> None:
    """names_with_ancestors stops a name's walk at an ancestor it has already added: the same set as
    walking every name down to the apex."""
    from smartdns.model import names_with_ancestors

    def every_suffix(keys: list[bytes], apex: int) -> set[bytes]:
        names = set()
        for key in keys:
            at = 0
            while len(key) - at >= apex:
                names.add(key[at:])
                at += key[at] + 1
        return names

    rng = random.Random(2)
    apex = dns.name.from_text("example.com.").to_wire()
    for _ in range(300):
        keys = []
        for _ in range(rng.randint(0, 12)):
            labels = [rng.choice(["a", "b", "www", "x1", "_tcp", "*"]) for _ in range(rng.randint(0, 4))]
            keys.append(dns.name.from_text(".".join(labels) + ".example.com." if labels else "example.com.").to_wire())
        assert names_with_ancestors(keys, len(apex)) == every_suffix(keys, len(apex))
