"""catalog.py in-process: which RRsets go in which section, for the authoritative test zones (no server)."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from conftest import SOA_MINIMUM, SOA_TTL
from smartdns.catalog import REFUSE, Catalog, Resolution
from smartdns.model import DynamicRRset, StaticRRset


@pytest.fixture(scope="module")
def catalog(zone_data) -> Catalog:
    return Catalog(zone_data)


def resolve(catalog: Catalog, name: str, rdtype: str) -> Resolution:
    return catalog.resolve(dns.name.from_text(name), dns.rdatatype.from_text(rdtype))


def section(entries) -> set[tuple[str, str]]:
    return {(e.owner.to_text(), dns.rdatatype.to_text(e.rdtype)) for e in entries}


def test_an_answer_with_the_targets_addresses_in_additional(catalog):
    found = resolve(catalog, "example.com.", "MX")
    assert (found.rcode, found.aa) == (dns.rcode.NOERROR, True)
    assert section(found.answer) == {("example.com.", "MX")}
    assert section(found.additional) == {("mx.example.com.", "A"), ("mx.example.com.", "AAAA")}


def test_nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl(catalog):
    for name, rdtype, rcode in (("nope.example.com.", "A", dns.rcode.NXDOMAIN), ("www.example.com.", "MX", 0)):
        found = resolve(catalog, name, rdtype)
        assert found.rcode == rcode and found.negative
        (soa,) = found.authority
        assert isinstance(soa.source, StaticRRset) and soa.rdtype == dns.rdatatype.SOA
        assert soa.source.rdataset.ttl == min(SOA_TTL, SOA_MINIMUM)


def test_names_outside_our_zones_are_refused(catalog):
    assert resolve(catalog, "www.example.org.", "A") is REFUSE


def test_wildcards_and_empty_non_terminals(catalog):
    wild = resolve(catalog, "anything.w.example.com.", "A")
    assert section(wild.answer) == {("anything.w.example.com.", "A")}  # the query name as owner
    ent = resolve(catalog, "b.w.example.com.", "A")  # a.b.w exists: b.w is empty, and blocks the wildcard
    assert ent.rcode == dns.rcode.NOERROR and ent.negative


def test_a_delegation_is_a_referral_with_glue_and_no_aa(catalog):
    found = resolve(catalog, "host.sub.example.com.", "A")
    assert not found.aa and not found.answer
    assert ("sub.example.com.", "NS") in section(found.authority)
    assert dns.name.from_text("ns1.sub.example.com.") in found.glue


def test_cname_chains_are_followed_across_our_zones(catalog):
    found = resolve(catalog, "c1.example.com.", "A")
    assert [e.owner.to_text() for e in found.answer] == ["c1.example.com.", "c2.example.com.", "c3.example.net.",
                                                         "final.example.com."]


def test_dname_synthesizes_a_cname(catalog):
    found = resolve(catalog, "q.d.example.com.", "A")
    assert section(found.answer) == {("d.example.com.", "DNAME"), ("q.d.example.com.", "CNAME"),
                                     ("q.example.net.", "A")}


def test_dynamic_records_stay_undecided_in_the_resolution(catalog):
    found = resolve(catalog, "srv.geo.example.", "A")
    assert found.dynamic and isinstance(found.answer[0].source, DynamicRRset)


def test_resolve_wire_is_resolve_for_lower_case_wire_names(catalog):
    for name in ("nope.example.com.", "b.w.example.com.", "www.example.com.", "x.sub.mname.example.", "example.org."):
        qname = dns.name.from_text(name)
        assert catalog.resolve_wire(qname.to_wire(), dns.rdatatype.A) == catalog.resolve(qname, dns.rdatatype.A)


def test_a_new_catalog_takes_over_what_was_made_for_unchanged_zones(zone_data) -> None:
    """A reload of one zone among many builds that zone's negative answers alone."""
    from dataclasses import replace

    before = Catalog(zone_data)
    paths = sorted(zone_data)
    assert len(paths) > 1
    for path in paths:
        before.negatives(zone_data[path].wire, zone_data[path])  # made when first asked for
    changed = paths[0]
    after_zones = {**zone_data, changed: replace(zone_data[changed])}  # a new object, as a reload makes
    after = Catalog(after_zones, before)
    for path in paths:
        key = zone_data[path].wire
        if path == changed:
            assert key not in after._negatives  # made again when first asked for
            assert after.negatives(key, after_zones[path])[0].zone is after_zones[changed]
        else:
            assert after._negatives[key] is before._negatives[key]
