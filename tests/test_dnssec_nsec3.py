"""NSEC3 (`1 0 0 -`, RFC 9276) as a per-zone option: every negative shape from a live server.

Each response is validated with dnspython (every RRSIG against the zone's DNSKEY) and its
NSEC3 records are checked to prove what the response claims (RFC 5155 8), with hashes
computed here by dnspython's `nsec3_hash`, independently of the server's code.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import dns.dnssec
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset
import dns.zone
import pytest

from conftest import DOMESTIC
from smartdns.dnssec import keys
from test_dnssec_answers import ZONE, ask, validated, zone_text


@pytest.fixture
def signed3(smartdns, geo_mmdb, tmp_path):
    keys.generate(ZONE, 13, tmp_path / "keys")
    server = smartdns(zones={"example.com.": zone_text()},
                      config={"geodb": [str(geo_mmdb)],
                              "dnssec": {"keys": str(tmp_path / "keys"), "nsec3": ["example.com"]}})
    keyset = server.query("example.com", "DNSKEY", want_dnssec=True)
    (dnskeys,) = [r for r in keyset.answer if r.rdtype == dns.rdatatype.DNSKEY]
    server.keyset = {ZONE: dnskeys}
    return server


def hashed(name: dns.name.Name | str) -> str:
    return dns.dnssec.nsec3_hash(name, None, 0, 1).lower()


def nsec3s(response) -> list[dns.rrset.RRset]:
    assert not [r for r in response.authority if r.rdtype == dns.rdatatype.NSEC], "NSEC in an NSEC3 zone"
    found = [r for r in response.authority if r.rdtype == dns.rdatatype.NSEC3]
    for rrset in found:
        (rdata,) = rrset
        assert (rdata.algorithm, rdata.flags, rdata.iterations, rdata.salt) == (1, 0, 0, b"")
        assert rrset.name.parent() == ZONE
    return found


def owner_hash(rrset: dns.rrset.RRset) -> str:
    return rrset.name.labels[0].decode().lower()


def next_hash(rrset: dns.rrset.RRset) -> str:
    return base64.b32hexencode(rrset[0].next).decode().lower()


def matching(proof: list[dns.rrset.RRset], name: dns.name.Name | str) -> dns.rrset.RRset | None:
    return next((r for r in proof if owner_hash(r) == hashed(name)), None)


def covers(rrset: dns.rrset.RRset, name: dns.name.Name | str) -> bool:
    h, start, end = hashed(name), owner_hash(rrset), next_hash(rrset)
    return start < h < end if start < end else (h > start or h < end)  # the last one wraps


def covered(proof: list[dns.rrset.RRset], name: dns.name.Name | str) -> bool:
    return any(covers(r, name) for r in proof)


def types_at(rrset: dns.rrset.RRset) -> set[str]:
    return set(dns.rdtypes.ANY.NSEC.Bitmap(rrset[0].windows).to_text().split())


def closest_encloser(proof: list[dns.rrset.RRset], name: dns.name.Name) -> tuple[dns.name.Name, dns.name.Name]:
    """RFC 5155 8.3: the longest ancestor with a matching NSEC3 whose next closer name is covered."""
    candidate = name
    while candidate != ZONE:
        parent = candidate.parent()
        if matching(proof, parent) is not None:
            assert covered(proof, candidate), f"next closer {candidate} not covered"
            return parent, candidate
        candidate = parent
    raise AssertionError(f"no closest encloser proven for {name}")


def assert_nxdomain_proven(proof: list[dns.rrset.RRset], name: dns.name.Name) -> None:
    assert matching(proof, name) is None
    encloser, _ = closest_encloser(proof, name)
    assert covered(proof, dns.name.Name([b"*", *encloser.labels])), f"*.{encloser} not covered"


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nxdomain_closest_encloser_next_closer_and_wildcard(signed3, tcp):
    for label in ("nosuchname", "a", "zzzz", "b.ent2", "x.y.mx", "deeper.than.ent"):
        name = dns.name.from_text(f"{label}.example.com.")
        response = ask(signed3, name.to_text(), "AAAA", tcp)
        assert response.rcode() == dns.rcode.NXDOMAIN, label
        validated(signed3, response)
        proof = nsec3s(response)
        assert_nxdomain_proven(proof, name)
        assert len(proof) <= 3


def test_closest_encloser_below_the_apex(signed3):
    name = dns.name.from_text("x.y.b.ent.example.com.")
    response = ask(signed3, name.to_text(), "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    validated(signed3, response)
    proof = nsec3s(response)
    assert closest_encloser(proof, name)[0] == dns.name.from_text("b.ent.example.com.")
    assert_nxdomain_proven(proof, name)


def test_nodata_matches_the_name(signed3):
    response = ask(signed3, "ns1.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    validated(signed3, response)
    (rrset,) = nsec3s(response)
    assert owner_hash(rrset) == hashed("ns1.example.com.")
    assert "TXT" not in types_at(rrset) and "CNAME" not in types_at(rrset) and "A" in types_at(rrset)
    mx = nsec3s(ask(signed3, "mx.example.com", "TXT"))
    assert types_at(mx[0]) == {"A", "AAAA", "RRSIG"}


def test_empty_non_terminal_has_its_own_nsec3(signed3):
    for ent in ("ent.example.com.", "b.ent.example.com."):
        response = ask(signed3, ent, "A")
        assert response.rcode() == dns.rcode.NOERROR and not response.answer
        validated(signed3, response)
        (rrset,) = nsec3s(response)
        assert owner_hash(rrset) == hashed(ent) and types_at(rrset) == set()


@pytest.mark.parametrize("qname", ["anything.wild.example.com.", "x.anything.wild.example.com."])
def test_wildcard_answer_covers_the_next_closer(signed3, qname):
    name = dns.name.from_text(qname)
    response = ask(signed3, name.to_text(), "A")
    assert [r.to_text() for r in response.answer[0]] == ["192.0.2.80"]
    validated(signed3, response)
    (rrsig,) = [r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG]
    assert rrsig[0].labels == 3  # the source is *.wild.example.com: its next closer name is one label below wild
    next_closer = dns.name.Name(name.labels[-5:])  # anything.wild.example.com.
    proof = nsec3s(response)
    assert covered(proof, next_closer) and matching(proof, next_closer) is None


def test_wildcard_nodata(signed3):
    name = dns.name.from_text("anything.wild.example.com.")
    response = ask(signed3, name.to_text(), "AAAA")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    validated(signed3, response)
    proof = nsec3s(response)
    encloser, _ = closest_encloser(proof, name)
    assert encloser == dns.name.from_text("wild.example.com.")
    source = matching(proof, "*.wild.example.com.")
    assert source is not None and "AAAA" not in types_at(source) and "A" in types_at(source)


def test_referral_without_ds_matches_the_cut(signed3):
    response = ask(signed3, "host.sub.example.com", "A")
    validated(signed3, response, unsigned={("sub.example.com.", "NS")})
    (rrset,) = nsec3s(response)
    assert owner_hash(rrset) == hashed("sub.example.com.") and types_at(rrset) == {"NS"}
    assert rrset[0].flags == 0  # no opt-out: the cut is proven insecure by its own NSEC3
    ds_query = ask(signed3, "sub.example.com", "DS")
    validated(signed3, ds_query)
    assert owner_hash(nsec3s(ds_query)[0]) == hashed("sub.example.com.")
    secure = ask(signed3, "host.secure.example.com", "A")
    assert any(r.rdtype == dns.rdatatype.DS for r in secure.authority) and not nsec3s(secure)


def test_cname_to_nothing_proves_the_target_absent(signed3):
    response = ask(signed3, "dangling.example.com", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    validated(signed3, response)
    assert_nxdomain_proven(nsec3s(response), dns.name.from_text("nothere.example.com."))


def test_nsec3param_at_the_apex_and_no_nsec_served(signed3):
    response = ask(signed3, "example.com", "NSEC3PARAM")
    (param,) = [r for r in response.answer if r.rdtype == dns.rdatatype.NSEC3PARAM]
    assert [r.to_text() for r in param] == ["1 0 0 -"]
    validated(signed3, response)
    apex = nsec3s(ask(signed3, "example.com", "NULL"))
    assert {"SOA", "NS", "DNSKEY", "NSEC3PARAM", "RRSIG"} <= types_at(apex[0]) and "NSEC" not in types_at(apex[0])
    by_type = ask(signed3, "mx.example.com", "NSEC")
    assert not [r for r in by_type.answer if r.rdtype == dns.rdatatype.NSEC]
    validated(signed3, by_type)


def test_dump_holds_one_ring_over_every_authoritative_name(signed3):
    """`dump --dnssec`: NSEC3PARAM and an NSEC3 per name, empty non-terminal and cut (not glue);
    following next-hashed-owner from any one visits each once and comes back."""
    dump = subprocess.run([sys.executable, "-m", "smartdns", "dump", "example.com", "--dnssec", "--client", DOMESTIC,
                           "--config", str(signed3.config_path)], cwd=signed3.workdir, capture_output=True, text=True,
                          check=True).stdout
    zone = dns.zone.from_text(dump, origin=ZONE, relativize=False, check_origin=False)
    chain = {name.labels[0].decode().lower(): rdataset for name, node in zone.nodes.items()
             for rdataset in node.rdatasets if rdataset.rdtype == dns.rdatatype.NSEC3}
    assert not any(r.rdtype == dns.rdatatype.NSEC for node in zone.nodes.values() for r in node.rdatasets)
    must = ["example.com.", "ns1.example.com.", "mx.example.com.", "ent.example.com.", "b.ent.example.com.",
            "a.b.ent.example.com.", "*.wild.example.com.", "wild.example.com.", "sub.example.com.", "secure.example.com."]
    assert {hashed(n) for n in must} <= set(chain)
    assert hashed("ns.sub.example.com.") not in chain  # glue below the cut is not authoritative
    at, visited = hashed("example.com."), []
    while at not in visited:
        visited.append(at)
        at = base64.b32hexencode(chain[at][0].next).decode().lower()
    assert at == visited[0] and sorted(visited) == sorted(chain)
    assert [r.to_text() for r in zone.find_rdataset(ZONE, dns.rdatatype.NSEC3PARAM)] == ["1 0 0 -"]


def test_config_names_the_zones(tmp_path):
    from smartdns.config import ConfigError, load_config

    path = tmp_path / "smartdns.yaml"
    path.write_text("zones: zones\ndnssec: {keys: keys, nsec3: [Example.COM, example.net.]}\n")
    assert load_config(path).dnssec_nsec3 == frozenset({"example.com.", "example.net."})
    path.write_text("zones: zones\ndnssec: {keys: keys, nsec3: example.com}\n")
    with pytest.raises(ConfigError, match="nsec3"):
        load_config(path)


def test_check_warns_of_an_nsec3_zone_that_is_not_served(tmp_path):
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.com.yaml").write_text(zone_text())
    config = tmp_path / "smartdns.yaml"
    config.write_text("zones: zones\ndnssec: {keys: keys, nsec3: [example.com, exmaple.com]}\n")
    done = subprocess.run([sys.executable, "-m", "smartdns", "check", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "dnssec nsec3: exmaple.com. is not a zone in" in done.stdout
    assert "dnssec nsec3: example.com." not in done.stdout


def test_workers_answer_from_the_handed_over_nsec3_chain(smartdns, geo_mmdb, tmp_path):
    """With workers the chain is built by the supervisor and handed over: the proofs still hold."""
    keys.generate(ZONE, 13, tmp_path / "keys")
    server = smartdns(zones={"example.com.": zone_text()},
                      config={"geodb": [str(geo_mmdb)], "workers": 2,
                              "dnssec": {"keys": str(tmp_path / "keys"), "nsec3": ["example.com"]}})
    keyset = server.query("example.com", "DNSKEY", want_dnssec=True)
    server.keyset = {ZONE: next(r for r in keyset.answer if r.rdtype == dns.rdatatype.DNSKEY)}
    for i in range(20):  # the kernel spreads queries over both workers
        tcp = bool(i % 2)
        name = dns.name.from_text(f"x{i}.y.b.ent.example.com.")
        response = ask(server, name.to_text(), "A", tcp)
        assert response.rcode() == dns.rcode.NXDOMAIN
        validated(server, response)
        assert_nxdomain_proven(nsec3s(response), name)
        param = ask(server, "example.com", "NSEC3PARAM", tcp)
        validated(server, param)
        assert [r.to_text() for r in param.answer[0]] == ["1 0 0 -"]
