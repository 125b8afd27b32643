"""The shortcuts for random names agree with the reference path byte for byte.

`Catalog.resolve_wire` (no dnspython names for NXDOMAIN and empty non-terminals) must give
what `Catalog.resolve` gives, and a negative response built from the per-zone template must
be exactly what dnspython renders for that name.
"""

from __future__ import annotations

import dns.name
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import build_mmdb, header, opt_record, question
from smartdns.catalog import Catalog
from smartdns.geo import Classifier
from smartdns.hotcache import Responder
from smartdns.responder import State
from smartdns.wire import full_parse, splice
from smartdns.zonefile import CONTINENT_OF

LABELS = st.sampled_from(["www", "a", "b", "x", "*", "ns1", "hostmaster", "mx", "sub", "d", "d2", "w", "host",
                          "deep", "q", "zz", "_tcp", "Mx", "NS1"])
SUFFIXES = st.sampled_from(["example.com.", "example.net.", "geo.example.", "sub.example.com.", "w.example.com.",
                            "mname.example.", "sub.mname.example.", "ns1.sub.mname.example."])
TYPES = st.sampled_from([1, 28, 15, 2, 16, 6, 5, 39, 43, 33, 255, 99, 65000])


@pytest.fixture(scope="module")
def catalog(zone_data) -> Catalog:
    return Catalog(zone_data)


@pytest.fixture(scope="module")
def responder(catalog, tmp_path_factory) -> Responder:
    return Responder(State(catalog, Classifier((build_mmdb(tmp_path_factory.mktemp("geo")),), CONTINENT_OF)))


@st.composite
def names(draw) -> str:
    labels = draw(st.lists(LABELS, max_size=3))
    return ".".join(labels + [draw(SUFFIXES)])


@pytest.mark.slow
@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(name=names(), rdtype=TYPES)
def test_resolve_wire_agrees_with_resolve(catalog, name, rdtype):
    qname = dns.name.from_text(name)
    assert catalog.resolve_wire(qname.canonicalize().to_wire(), rdtype) == catalog.resolve(qname, rdtype)


@pytest.mark.slow
@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(name=names(), rdtype=TYPES, edns=st.sampled_from([None, (False, b""), (True, b""), (False, b"\x00\x03\x00\x00")]),
       case=st.booleans())
def test_negative_template_matches_dnspython(responder, name, rdtype, edns, case):
    if case:
        name = name.upper()
    data = header(ar=0 if edns is None else 1) + dns.name.from_text(name).to_wire() + rdtype.to_bytes(2, "big") + b"\x00\x01"
    if edns is not None:
        data += opt_record(do=edns[0], options=edns[1])
    query = full_parse(data)
    resolution = responder.state.resolve(query)
    responder.state.rng.seed(1)
    served = responder.state.answer(query, "127.0.0.1", False, resolution)
    if resolution.negative:
        reference = splice(responder.state.render(query, resolution, (), 65535), query)
        assert served == reference, name
    # and through the hot path, twice (the second time from the cache)
    for _ in range(2):
        responder.state.rng.seed(1)
        assert responder.respond(data, "127.0.0.1", False) == served


def test_case_variants_share_one_cache_entry_and_keep_their_case(responder):

    responder.state.hot_udp.clear()
    variants = ["www.example.com.", "WWW.Example.COM.", "wWw.eXaMpLe.cOm."]
    for name in variants:
        data = header() + question(name)
        reference = responder.state.answer(full_parse(data), "127.0.0.1", True)
        assert responder.respond(data, "127.0.0.1", True) == reference  # the query's own case, byte for byte
        assert dns.name.from_wire(reference, 12)[0].to_text() == name
    assert list(responder.state.hot_udp) == [(header() + question("www.example.com."))[2:]]
