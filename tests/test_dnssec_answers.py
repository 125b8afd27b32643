"""Signed answers from a live server: every response shape validated with dnspython.

The server signs at load with a key written by `smartdns dnssec keygen`'s code;
each test queries it with DO=1 over UDP and TCP and checks (1) every RRset that
needs a signature has one that validates against the zone's DNSKEY, and (2) the
NSEC records in authority prove what the response claims (RFC 4035 5.4).
"""

from __future__ import annotations

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rrset
import pytest

from conftest import DOMESTIC, EXAMPLE_ZONES, OVERSEAS
from smartdns.dnssec import keys

ZONE = dns.name.from_text("example.com.")
EXTRA = """
www:
  type: CNAME
  value: web.example.com.
web:
  type: CNAME
  value: mx.example.com.
dangling:
  type: CNAME
  value: nothere.example.com.
_25._tcp.mx:
  type: TLSA
  value:
    certificate_usage: 3
    selector: 1
    matching_type: 1
    certificate_association_data: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
'*.wild':
  type: A
  value: 192.0.2.80
a.b.ent:
  type: TXT
  value: deep
sub:
  type: NS
  values: [ns.sub.example.com.]
ns.sub:
  type: A
  value: 192.0.2.99
bigmx:
  type: MX
  values:
    - {exchange: mx1.example.com., preference: 10}
    - {exchange: mx2.example.com., preference: 10}
    - {exchange: mx3.example.com., preference: 20}
    - {exchange: mx4.example.com., preference: 20}
mx1: [{type: A, value: 192.0.2.21}, {type: AAAA, value: "2001:db8::21"}]
mx2: [{type: A, value: 192.0.2.22}, {type: AAAA, value: "2001:db8::22"}]
mx3: [{type: A, value: 192.0.2.23}, {type: AAAA, value: "2001:db8::23"}]
mx4: [{type: A, value: 192.0.2.24}, {type: AAAA, value: "2001:db8::24"}]
secure:
  - type: NS
    values: [ns.elsewhere.net.]
  - type: DS
    value:
      key_tag: 12345
      algorithm: 13
      digest_type: 2
      digest: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
"""


def zone_text() -> str:
    return (EXAMPLE_ZONES / "example.com.yaml").read_text().rstrip("\n") + "\n" + EXTRA


@pytest.fixture
def signed(smartdns, geo_mmdb, tmp_path):
    key = keys.generate(ZONE, 13, tmp_path / "keys")
    server = smartdns(zones={"example.com.": zone_text()},
                      config={"geodb": [str(geo_mmdb)], "dnssec": {"keys": str(tmp_path / "keys")}})
    keyset = server.query("example.com", "DNSKEY", want_dnssec=True)
    (dnskeys,) = [r for r in keyset.answer if r.rdtype == dns.rdatatype.DNSKEY]
    assert key.dnskey in dnskeys
    server.keyset = {ZONE: dnskeys}
    return server


def sigs_for(message: dns.message.Message, section: list, rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
    for candidate in section:
        if candidate.rdtype == dns.rdatatype.RRSIG and candidate.covers == rrset.rdtype and candidate.name == rrset.name:
            return candidate
    return None


def validated(server, message: dns.message.Message, unsigned: tuple = ()) -> None:
    """Every RRset of answer and authority validates (except `unsigned` (name, type)); additional ones
    that carry RRSIGs validate too."""
    assert not message.flags & dns.flags.AD  # an authoritative server never sets AD
    for section, required in ((message.answer, True), (message.authority, True), (message.additional, False)):
        for rrset in section:
            if rrset.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.OPT):
                continue
            sigs = sigs_for(message, section, rrset)
            if (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) in unsigned:
                assert sigs is None
                continue
            if sigs is None:
                assert not required, f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} has no RRSIG"
                continue
            dns.dnssec.validate(rrset, sigs, server.keyset)


def nsecs(message: dns.message.Message) -> list[dns.rrset.RRset]:
    return [r for r in message.authority if r.rdtype == dns.rdatatype.NSEC]


def covers(nsec: dns.rrset.RRset, name: dns.name.Name) -> bool:
    nxt = nsec[0].next
    return nsec.name < name and (name < nxt or nxt == ZONE)


def types_at(nsec: dns.rrset.RRset) -> set[str]:
    return set(dns.rdtypes.ANY.NSEC.Bitmap(nsec[0].windows).to_text().split())


def ask(server, name: str, rdtype: str, tcp: bool = False, source: str = "127.0.0.1", **kw) -> dns.message.Message:
    return server.query(name, rdtype, want_dnssec=True, tcp=tcp, source=source, **kw)



@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_positive_static_answers_validate(signed, tcp):
    for name, rdtype in (("example.com", "MX"), ("example.com", "TXT"), ("example.com", "NS"),
                         ("example.com", "SOA"), ("example.com", "DNSKEY"), ("example.com", "CDS"),
                         ("example.com", "CDNSKEY"), ("ns1.example.com", "A"), ("_25._tcp.mx.example.com", "TLSA")):
        response = ask(signed, name, rdtype, tcp)
        assert response.rcode() == dns.rcode.NOERROR and response.answer, (name, rdtype)
        validated(signed, response)
        assert not nsecs(response)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_every_dynamic_variant_validates(signed, tcp):
    seen = set()
    for source in (DOMESTIC, OVERSEAS):
        for _ in range(40):  # the overseas pool has two values picked 3:1: all seen but once in 10^5 runs
            for rdtype in ("A", "AAAA"):
                response = ask(signed, "mx.example.com", rdtype, tcp, source)
                validated(signed, response)
                seen.update(r.to_text() for r in response.answer[0])
    assert {"192.0.2.10", "198.51.100.10", "198.51.100.11", "2001:db8:c::10", "2001:db8:e::10"} <= seen


def test_ecs_variants_validate(signed):
    import dns.edns

    for subnet, expected in (("114.114.114.0", "192.0.2.10"), ("8.8.8.0", None)):
        option = dns.edns.ECSOption(subnet, 24)
        response = ask(signed, "mx.example.com", "A", options=[option], use_edns=0)
        validated(signed, response)
        if expected:
            assert [r.to_text() for r in response.answer[0]] == [expected]


def test_mx_with_additional_addresses_signed(signed):
    for source in (DOMESTIC, OVERSEAS):
        response = ask(signed, "example.com", "MX", source=source)
        validated(signed, response)
        additional = {(r.name.to_text(), r.rdtype) for r in response.additional if r.rdtype == dns.rdatatype.RRSIG}
        assert ("mx.example.com.", dns.rdatatype.RRSIG) in additional


def test_additional_rrsigs_that_do_not_fit_are_dropped_without_tc(signed):
    whole = ask(signed, "bigmx.example.com", "MX", tcp=True)
    assert len([r for r in whole.additional if r.rdtype == dns.rdatatype.RRSIG]) == 8  # A and AAAA of 4 exchanges
    small = ask(signed, "bigmx.example.com", "MX", payload=512)
    assert not small.flags & dns.flags.TC and len(small.to_wire()) <= 512
    assert 0 < len(small.additional) < len(whole.additional)  # some additional records (and RRSIGs) dropped
    validated(signed, small)  # the answer keeps its RRSIG; what additional records remain validate


def test_cname_chain_each_link_signed(signed):
    response = ask(signed, "www.example.com", "A", source=DOMESTIC)
    assert [r.rdtype for r in response.answer if r.rdtype != dns.rdatatype.RRSIG] == \
        [dns.rdatatype.CNAME, dns.rdatatype.CNAME, dns.rdatatype.A]
    validated(signed, response)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_nxdomain_proves_name_and_wildcard_absent(signed, tcp):
    name = dns.name.from_text("nosuchname.example.com.")
    response = ask(signed, name.to_text(), "A", tcp)
    assert response.rcode() == dns.rcode.NXDOMAIN
    validated(signed, response)
    proof = nsecs(response)
    assert any(covers(n, name) for n in proof)
    assert any(covers(n, dns.name.from_text("*.example.com.")) for n in proof)


def test_random_names_each_get_their_own_proof(signed):
    for label in ("a", "mz", "ns15", "zzzz", "b.ent2", "x.y.mx"):
        name = dns.name.from_text(f"{label}.example.com.")
        response = ask(signed, name.to_text(), "AAAA")
        assert response.rcode() == dns.rcode.NXDOMAIN
        validated(signed, response)
        assert any(covers(n, name) for n in nsecs(response)), label


def test_cname_to_nothing_proves_the_target_absent(signed):
    response = ask(signed, "dangling.example.com", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    validated(signed, response)
    assert any(covers(n, dns.name.from_text("nothere.example.com.")) for n in nsecs(response))


def test_nodata_shows_the_type_bitmap(signed):
    response = ask(signed, "ns1.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    validated(signed, response)
    (nsec,) = nsecs(response)
    assert nsec.name == dns.name.from_text("ns1.example.com.") and "TXT" not in types_at(nsec)
    # a dynamic name's types are the same for every client
    for source in (DOMESTIC, OVERSEAS):
        response = ask(signed, "mx.example.com", "TXT", source=source)
        (nsec,) = nsecs(response)
        assert types_at(nsec) == {"A", "AAAA", "RRSIG", "NSEC"}
        validated(signed, response)


def test_nsec_asked_for_by_type(signed):
    response = ask(signed, "mx.example.com", "NSEC")
    (nsec,) = [r for r in response.answer if r.rdtype == dns.rdatatype.NSEC]
    assert nsec.name == dns.name.from_text("mx.example.com.") and types_at(nsec) == {"A", "AAAA", "RRSIG", "NSEC"}
    assert not response.authority
    validated(signed, response)
    assert signed.query("mx.example.com", "NSEC").answer  # without DO too, as any type asked for
    ent = ask(signed, "ent.example.com", "NSEC")  # no NSEC of its own: NODATA, proven
    assert not ent.answer and nsecs(ent)
    validated(signed, ent)


def test_empty_non_terminal_nodata(signed):
    for ent in ("ent.example.com.", "b.ent.example.com."):
        response = ask(signed, ent, "A")
        assert response.rcode() == dns.rcode.NOERROR and not response.answer
        validated(signed, response)
        (nsec,) = nsecs(response)
        assert covers(nsec, dns.name.from_text(ent)) and nsec[0].next.is_subdomain(dns.name.from_text(ent))


def test_wildcard_answer_carries_the_no_closer_match_proof(signed):
    name = dns.name.from_text("anything.wild.example.com.")
    response = ask(signed, name.to_text(), "A")
    assert [r.to_text() for r in response.answer[0]] == ["192.0.2.80"]
    validated(signed, response)
    (rrsig,) = [r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG]
    assert rrsig[0].labels == 3  # signed as *.wild.example.com.
    assert any(covers(n, name) for n in nsecs(response))


def test_wildcard_nodata(signed):
    name = dns.name.from_text("anything.wild.example.com.")
    response = ask(signed, name.to_text(), "AAAA")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    validated(signed, response)
    proof = nsecs(response)
    assert any(covers(n, name) for n in proof)
    assert any(n.name == dns.name.from_text("*.wild.example.com.") and "AAAA" not in types_at(n) for n in proof)


def test_referral_without_ds_proves_insecure(signed):
    response = ask(signed, "host.sub.example.com", "A")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    validated(signed, response, unsigned={("sub.example.com.", "NS")})
    (nsec,) = nsecs(response)
    assert nsec.name == dns.name.from_text("sub.example.com.") and types_at(nsec) == {"NS", "RRSIG", "NSEC"}
    assert not any(r.rdtype == dns.rdatatype.RRSIG for r in response.additional)  # glue is never signed


def test_referral_with_ds_signs_the_ds(signed):
    response = ask(signed, "host.secure.example.com", "A")
    validated(signed, response, unsigned={("secure.example.com.", "NS")})
    assert any(r.rdtype == dns.rdatatype.DS for r in response.authority) and not nsecs(response)
    ds_query = ask(signed, "sub.example.com", "DS")  # no DS: NODATA from the parent side, proven
    validated(signed, ds_query)
    assert [n.name for n in nsecs(ds_query)] == [dns.name.from_text("sub.example.com.")]


def test_do0_carries_no_dnssec_records(signed):
    for name, rdtype in (("example.com", "MX"), ("nosuchname.example.com", "A"), ("ns1.example.com", "TXT"),
                         ("host.secure.example.com", "A")):
        response = signed.query(name, rdtype)
        kinds = {r.rdtype for r in response.answer + response.authority + response.additional}
        assert not kinds & {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.DS}
    # DNSKEY asked for by type is answered either way
    assert signed.query("example.com", "DNSKEY").answer


def test_unsigned_zone_unchanged(smartdns, tmp_path):
    server = smartdns(copy_example=True, config={"dnssec": {"keys": str(tmp_path / "nokeys")}})
    response = server.query("example.com", "MX", want_dnssec=True)
    assert not any(r.rdtype == dns.rdatatype.RRSIG for r in response.answer)
    assert not server.query("example.com", "DNSKEY", want_dnssec=True).answer
