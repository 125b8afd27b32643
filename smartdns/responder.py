"""The reference answer path: one parsed query in, the full response out.

`State` is one generation of answers: the loaded data (catalog, classifier),
the settings that shape responses, and the caches made from them. A reload
builds a new one and swaps it in whole; every query takes the state once, so no
response mixes two generations. `State.answer()` parses nothing and caches no
whole responses: it looks up, decides, renders and splices, and is what the hot
cache (hotcache.py) must reproduce byte for byte (tests/test_authoritative.py,
tests/test_fastpaths.py).

Threading model: the UDP threads (one per socket, server.py) and the event loop
(TCP, reloads, health) all reach the current `State` through one `Responder`
(hotcache.py). What they share, and why that is safe without locks:
- the loaded data (catalog, zones: model.py) is immutable; a reload builds a new
  `State` and swaps `Responder.state` in one assignment, and each query reads
  that attribute once, so it sees one generation throughout;
- the caches (`resolutions`, `rendered`, `hot_udp`/`hot_tcp`, `templates`,
  each `Decided.responses`) are plain dicts touched only by single `get`,
  `__setitem__` and `clear` calls, each atomic under the GIL; a lost or doubled
  entry costs a render, never a wrong answer, because every cached value is a
  pure function of its key and of this generation's immutable data;
- `decisions` depends on health as well: a health change (on the event loop)
  replaces the dict whole instead of clearing it, and each query reads it once;
- counters are `cell[0] += 1` on lists: a lost increment under a thread switch
  is possible and accepted (metrics, not accounting).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, TypeVar, cast

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from .catalog import REFUSE, Catalog, Entry, Resolution
from .dnssec.answer import Proof, answer_entries, negative_proof, signed_sections
from .dnssec.negative import authority_tail
from .dnssec.negative import signed_negative as signed_negative_response
from .geo import Classifier, Location
from .model import DynamicRRset, PoolValue, StaticRRset
from .negative import NegativeTemplate, with_name
from .policy import IsUp, Picker, client_for, decide, scope_prefix, static_status
from .wire import REFUSED, ClientSubnet, Query, Rendered, error_response, render, splice

if TYPE_CHECKING:
    from .hotcache import DynamicHit, HotEntry

K = TypeVar("K")
V = TypeVar("V")
Choice = tuple[tuple[PoolValue, ...], ...]  # the values picked for each dynamic RRset of a response, in order
Draw = tuple[int, ...] | tuple[tuple[int, ...], ...]  # one picker's indexes, or a tuple of them per picker
EdnsShape = tuple[bool, bool] | None  # DO, NSID asked; None: no EDNS
RenderKey = tuple[bytes, dns.rdatatype.RdataType, EdnsShape, tuple[tuple[int, ...], ...]]
TemplateKey = tuple[bytes, int, EdnsShape]

CACHE_LIMIT = 50_000  # entries per cache; cleared when full
REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB})
CHAOS_NAMES = frozenset({b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"})  # RFC 4892


@dataclass
class State:
    """One generation of answers: the data, the settings that shape responses, and the caches made
    from them. A reload builds a new one and swaps it in whole, and every query takes the state once,
    so no response ever mixes two generations."""

    catalog: Catalog
    classifier: Classifier
    ecs: bool = True
    server_id: str | None = None  # NSID and CHAOS id.server; None: not answered
    is_up: IsUp = static_status
    rng: random.Random = field(default_factory=random.Random)  # weighted picks (tests seed their own)
    resolutions: dict[tuple[bytes, dns.rdatatype.RdataType], Resolution] = field(default_factory=dict)
    rendered: dict[RenderKey, Rendered] = field(default_factory=dict)
    hot_udp: dict[bytes, HotEntry] = field(default_factory=dict)  # query bytes after the ID -> entry (hotcache.py)
    hot_tcp: dict[bytes, HotEntry] = field(default_factory=dict)
    # (client, or None when the ECS decides; the dynamic entry) -> Decided
    decisions: dict[tuple[str | None, DynamicHit], Decided] = field(default_factory=dict)
    templates: dict[TemplateKey, NegativeTemplate | None] = field(default_factory=dict)  # None: cannot be templated
    # (zone, rcode, NSEC indexes) -> the authority records of a signed negative answer, and their count
    signed_tails: dict[tuple[bytes, int, tuple[int, ...]], tuple[bytes, int]] = field(default_factory=dict)

    def cache_sizes(self) -> str:
        """What this generation cached, for the debug log: sizes show a flood or a cache that never fills."""
        return (f"hot udp {len(self.hot_udp)}, hot tcp {len(self.hot_tcp)}, decisions {len(self.decisions)}, "
                f"negative {len(self.templates)}, rendered {len(self.rendered)}, geo {self.classifier.cached()}")

    @property
    def nsid(self) -> bytes | None:
        return self.server_id.encode() if self.server_id else None

    def resolve(self, query: Query) -> Resolution:
        if query.qclass != dns.rdataclass.IN or query.qtype in REFUSED_TYPES:
            return REFUSE  # no other classes (CHAOS is answered in answer()); no zone transfers (RFC 5936)
        key = (query.qname, query.qtype)
        resolution = self.resolutions.get(key)
        if resolution is None:
            resolution = self.catalog.resolve_wire(query.qname, query.qtype)
            bounded_put(self.resolutions, key, resolution)
        return resolution

    def answer(self, query: Query, client: str, udp: bool, resolution: Resolution | None = None) -> bytes:
        """The reference path: the full response to a parsed query, nothing taken from the hot cache."""
        if resolution is None:
            resolution = self.resolve(query)
        if resolution is REFUSE:
            chaos = self.chaos(query)
            if chaos is not None:
                return chaos
            return error_response(query.id, query.flags, REFUSED, query.question, query.edns)
        if not resolution.dynamic:
            return self.materialize(query, resolution, (), 0, udp)
        decided = self.decided(query, resolution, client)
        return self.materialize(query, resolution, decided.chosen(decided.draw()), decided.scope, udp)

    def client_subnet(self, query: Query) -> ClientSubnet | None:
        return query.edns.ecs if (self.ecs and query.edns is not None) else None

    def decided(self, query: Query, resolution: Resolution, client: str) -> Decided:
        """What this client gets from each dynamic RRset, and the ECS scope of that choice."""
        ecs = self.client_subnet(query)
        address, source_prefix, want_scope = client_for(ecs, client)
        classifier = self.classifier
        text = str(address)
        locate: Callable[[], Location] = lambda: classifier.locate(text)  # noqa: E731
        zone = resolution.zone.text if resolution.zone is not None else ""
        pickers, keys = [], []
        scope = 0
        for entry in resolution.answer + resolution.additional:
            record = entry.source
            if not isinstance(record, DynamicRRset):
                continue
            decision = decide(record, address, locate, self.is_up)
            pickers.append(Picker(decision.candidates, record.max_answers, self.rng))
            keys.append((zone, record.name or "@", decision.pool))
            if want_scope:
                scope = max(scope, scope_prefix(record.subnets(), address, locate().prefixlen, source_prefix))
        if pickers and not want_scope and ecs is not None:
            # An ECS address we cannot use (private, loopback, CGNAT): the resolver decided, so the answer
            # holds for this client subnet only. SCOPE 0 would tell a caching resolver "valid for every
            # client" and it would hand this answer to all its ECS clients (RFC 7871 7.2.1).
            scope = ecs.source
        return Decided(tuple(pickers), scope, tuple(keys))

    def materialize(self, query: Query, resolution: Resolution, choice: Choice, scope: int, udp: bool) -> bytes:
        """Render (or take the rendered form from cache) and splice in this query's particulars."""
        edns_shape = None if query.edns is None else (query.edns.do, query.edns.nsid)
        rendered = None
        if resolution.negative:
            rendered = self.signed_negative(query, resolution) if edns_shape is not None and edns_shape[0] else None
            if rendered is None:
                rendered = self.negative(query, resolution, edns_shape)
        if rendered is None:
            key = (query.qname, query.qtype, edns_shape, tuple(tuple(map(id, c)) for c in choice))
            rendered = self.rendered.get(key)
            if rendered is None:
                rendered = self.render(query, resolution, choice, 65535)
                bounded_put(self.rendered, key, rendered)
        ecs = self.client_subnet(query)
        option = ecs.reply(scope) if ecs is not None else b""
        limit = query.udp_limit if udp else 65535
        if len(rendered.wire) + len(option) > limit:
            rendered = self.render(query, resolution, choice, limit - len(option))
        return splice(rendered, query, option)

    def negative(self, query: Query, resolution: Resolution, edns_shape: EdnsShape) -> Rendered | None:
        """NXDOMAIN/NODATA from a per-zone template: a random-name flood must not cost a render per name."""
        zone = resolution.zone
        assert zone is not None
        key = (zone.wire, resolution.rcode, edns_shape)
        if key not in self.templates:
            self.templates[key] = NegativeTemplate.build(
                lambda name: self.render(with_name(query, name), resolution, (), 65535), zone.origin, zone.soa[0])
        template = self.templates[key]
        return template.render(query) if template is not None else None

    def signed_negative(self, query: Query, resolution: Resolution) -> Rendered | None:
        """NXDOMAIN/NODATA with DO=1 in a signed zone: the SOA and the name's NSEC proof, from
        parts made once per proof (dnssec/negative.py). None: not signed, or NSID asked."""
        signatures = self.catalog.signatures
        zone = resolution.zone
        signed = signatures.zone(zone)
        if signed is None or zone is None or (query.edns is not None and query.edns.nsid and self.nsid):
            return None
        indexes = negative_proof(zone, signed, query.qname, resolution.rcode)
        key = (zone.wire, resolution.rcode, indexes)
        tail = self.signed_tails.get(key)
        if tail is None:
            soa = resolution.authority[0]
            assert isinstance(soa.source, StaticRRset)
            sigs = signatures.sigs(soa.owner, soa.source, None, soa.source.rdataset, signed)
            if sigs is None:
                return None
            proof = Proof(signed)
            for index in indexes:
                proof.add(index)
            tail = authority_tail([(soa.owner, soa.source.rdataset), (soa.owner, sigs), *proof.pairs()])
            bounded_put(self.signed_tails, key, tail)
        return signed_negative_response(query, resolution.rcode, tail)

    def render(self, query: Query, resolution: Resolution, choices: Choice, limit: int) -> Rendered:
        chosen = iter(choices)
        do = query.edns is not None and query.edns.do
        signatures = self.catalog.signatures
        if do and signatures:
            answer, authority, additional = signed_sections(
                signatures, resolution, query.name, query.qtype, answer_entries(resolution.answer, chosen),
                answer_entries(resolution.authority, chosen), answer_entries(resolution.additional, chosen))
            return render(
                query.name, query.qtype, query.qclass, rcode=resolution.rcode, aa=resolution.aa,
                answer=answer, authority=authority, additional=additional,
                required_additional=resolution.glue, edns=query.edns, nsid=self.nsid, limit=limit,
            )

        def rrsets(entries: tuple[Entry, ...]) -> list[tuple[dns.name.Name, dns.rdataset.Rdataset]]:
            out: list[tuple[dns.name.Name, dns.rdataset.Rdataset]] = []
            for entry in entries:
                source = entry.source
                if isinstance(source, StaticRRset):
                    out.append((entry.owner, source.rdataset))
                else:
                    out.append((entry.owner, _rdataset(source, next(chosen))))
            return out

        answer = rrsets(resolution.answer)
        # A referral's DS is DNSSEC data: only for DO queries (RFC 3225 3, RFC 4035 3.1.4);
        # DO is part of the render cache key, so both shapes are cached apart.
        authority = rrsets(tuple(e for e in resolution.authority if do or e.rdtype != dns.rdatatype.DS))
        additional = rrsets(resolution.additional)
        return render(
            query.name, query.qtype, query.qclass, rcode=resolution.rcode, aa=resolution.aa,
            answer=answer, authority=authority, additional=additional,
            required_additional=resolution.glue, edns=query.edns, nsid=self.nsid, limit=limit,
        )

    def chaos(self, query: Query) -> bytes | None:
        """CHAOS TXT id.server / hostname.bind: which node answered (RFC 4892), when configured."""
        if (query.qclass != dns.rdataclass.CH or self.server_id is None or query.qname not in CHAOS_NAMES
                or query.qtype not in (dns.rdatatype.TXT, dns.rdatatype.ANY)):
            return None
        rdataset = dns.rdataset.Rdataset(dns.rdataclass.CH, dns.rdatatype.TXT, ttl=0)
        rdataset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.CH, dns.rdatatype.TXT, [self.server_id.encode()]))
        rendered = render(query.name, query.qtype, query.qclass, rcode=0, aa=True, answer=[(query.name, rdataset)],
                          edns=query.edns, nsid=self.nsid, limit=query.udp_limit)
        return splice(rendered, query)


class Decided:
    """One client's decision for one query shape: a picker per dynamic RRset, the ECS scope,
    the pools (for the answers metric), and the responses made from it so far."""

    __slots__ = ("pickers", "single", "scope", "answer_keys", "answer_cells", "responses")

    def __init__(self, pickers: tuple[Picker, ...], scope: int, answer_keys: tuple[tuple[str, str, str], ...]) -> None:
        self.pickers = pickers
        self.single = pickers[0] if len(pickers) == 1 else None  # the common case, drawn without a loop
        self.scope = scope
        self.answer_keys = answer_keys
        self.answer_cells: tuple[list[int], ...] = ()  # set by the responder, which owns the counters
        self.responses: dict[Draw, bytes] = {}  # draw -> response after the ID; few: one per combination

    def draw(self) -> Draw:
        if self.single is not None:
            return self.single.draw()
        return tuple([p.draw() for p in self.pickers])

    def chosen(self, draw: Draw) -> Choice:
        if self.single is not None:
            return (self.single.chosen(cast("tuple[int, ...]", draw)),)
        return tuple(p.chosen(d) for p, d in zip(self.pickers, cast("tuple[tuple[int, ...], ...]", draw)))


def _rdataset(record: DynamicRRset, values: tuple[PoolValue, ...]) -> dns.rdataset.Rdataset:
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, record.rdtype, ttl=record.ttl)
    for value in values:
        rdataset.add(value.rdata)
    return rdataset


def bounded_put(cache: dict[K, V], key: K, value: V) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
