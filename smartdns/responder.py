"""One query in, one response out.

The hot path: a response depends only on the query's bytes after its ID (the
question's name compared in lower case), the loaded data, health, and — for
dynamic records — the client and a weighted random pick. So the first answer to
a given query shape is kept under those bytes (`State.hot_udp`/`hot_tcp`), and
every later identical query costs one dict lookup and one concatenation with
its own ID (and its own case of the name); a dynamic answer adds the client's
(cached) decision and the pick. Everything else goes through `State.answer()`,
the reference path: parse, look up, decide, render, splice. Both give
byte-identical responses (tests/test_authoritative.py, tests/test_fastpaths.py).

Caches are bounded (cleared when full, so a random-name flood cannot grow
memory) and belong to one `State`, which a reload replaces whole; every query
takes the state once, and a health change replaces the decisions, which each
query also takes once, so nothing decided under old health or data survives.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from .catalog import REFUSE, Catalog, Entry, Resolution
from .geo import Classifier, Location
from .metrics import LATENCY_SAMPLE, RCODES, Stats, qtype_label
from .policy import DynamicRRset, IsUp, Picker, PoolValue, decide, scope_prefix, static_status
from .rrl import CATEGORY_ANSWER, CATEGORY_ERROR, CATEGORY_NXDOMAIN, RateLimiter
from .wire import (
    REFUSED, ClientSubnet, Malformed, Query, Rendered, error_response, fast_parse, full_parse, question_name_end,
    render, splice,
)
from .zonefile import StaticRRset

log = logging.getLogger("smartdns.query")

CACHE_LIMIT = 50_000  # entries per cache; cleared when full
# Whole responses by query bytes: a random-ECS flood makes every query a new entry of about
# 2 KB with its decision, so this bound is what caps memory (about 60 MB at most).
HOT_LIMIT = 30_000
REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB})
CHAOS_NAMES = frozenset({b"\x02id\x06server\x00", b"\x08hostname\x04bind\x00"})  # RFC 4892
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    resolutions: dict[tuple[bytes, int], Resolution] = field(default_factory=dict)
    rendered: dict[tuple, Rendered] = field(default_factory=dict)
    hot_udp: dict[bytes, object] = field(default_factory=dict)  # query bytes after the ID -> entry
    hot_tcp: dict[bytes, object] = field(default_factory=dict)
    decisions: dict[tuple, "Decided"] = field(default_factory=dict)  # (client, dynamic entry) -> Decided
    templates: dict[tuple, "NegativeTemplate | None"] = field(default_factory=dict)  # None: cannot be templated

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
            _bounded_put(self.resolutions, key, resolution)
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
        address, source_prefix, want_scope = client_for(self.client_subnet(query), client)
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
            pickers.append(Picker(decision.candidates, record.max_answers))
            keys.append((zone, record.name or "@", decision.pool))
            if want_scope:
                scope = max(scope, scope_prefix(record.subnets(), address, locate().prefixlen, source_prefix))
        return Decided(tuple(pickers), scope, tuple(keys))

    def materialize(self, query: Query, resolution: Resolution, choice: tuple, scope: int, udp: bool) -> bytes:
        """Render (or take the rendered form from cache) and splice in this query's particulars."""
        edns_shape = None if query.edns is None else (query.edns.do, query.edns.nsid)
        rendered = None
        if resolution.negative:
            rendered = self.negative(query, resolution, edns_shape)
        if rendered is None:
            key = (query.qname, query.qtype, edns_shape, tuple(tuple(map(id, c)) for c in choice))
            rendered = self.rendered.get(key)
            if rendered is None:
                rendered = self.render(query, resolution, choice, 65535)
                _bounded_put(self.rendered, key, rendered)
        ecs = self.client_subnet(query)
        option = ecs.reply(scope) if ecs is not None else b""
        limit = query.udp_limit if udp else 65535
        if len(rendered.wire) + len(option) > limit:
            rendered = self.render(query, resolution, choice, limit - len(option))
        return splice(rendered, query, option)

    def negative(self, query: Query, resolution: Resolution, edns_shape: object) -> Rendered | None:
        """NXDOMAIN/NODATA from a per-zone template: a random-name flood must not cost a render per name."""
        zone = resolution.zone
        assert zone is not None
        key = (zone.wire, resolution.rcode, edns_shape)
        if key not in self.templates:
            self.templates[key] = NegativeTemplate.build(
                lambda name: self.render(_with_name(query, name), resolution, (), 65535), zone.origin, zone.soa[0])
        template = self.templates[key]
        return template.render(query) if template is not None else None

    def render(self, query: Query, resolution: Resolution, choices: tuple, limit: int) -> Rendered:
        chosen = iter(choices)

        def rrsets(entries: tuple[Entry, ...]) -> list[tuple]:
            out = []
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
        do = query.edns is not None and query.edns.do
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
        self.responses: dict[object, bytes] = {}  # draw -> response after the ID; few: one per combination

    def draw(self) -> object:
        if self.single is not None:
            return self.single.draw()
        return tuple([p.draw() for p in self.pickers])

    def chosen(self, draw: object) -> tuple[tuple[PoolValue, ...], ...]:
        draws = (draw,) if self.single is not None else draw
        return tuple(p.chosen(d) for p, d in zip(self.pickers, draws))  # type: ignore[arg-type]


class Dynamic:
    """A hot entry whose response depends on the client: decisions cached, values picked per query."""

    __slots__ = ("query", "resolution", "udp", "cell", "client_free", "rrl_name", "has_ecs")

    def __init__(self, query: Query, resolution: Resolution, udp: bool, cell: list[int], client_free: bool) -> None:
        self.query = query
        self.resolution = resolution
        self.udp = udp
        self.cell = cell  # the queries counter for this shape
        self.client_free = client_free  # a usable ECS decides: every client gets the same decision
        self.rrl_name = query.qname + query.qtype.to_bytes(2, "big")
        self.has_ecs = query.edns is not None and query.edns.ecs is not None


class Responder:
    """Serves the current `State` fast: whole responses by query bytes, counters, rate limiting."""

    def __init__(self, state: State, *, stats: Stats | None = None, query_log: float = 0.0,
                 rrl: RateLimiter | None = None, counting: bool = True) -> None:
        self.state = state
        self.stats = stats if stats is not None else Stats()
        self.query_log = query_log  # fraction of queries logged
        self.rrl = rrl  # UDP only: TCP proves the source address, so it is never limited
        self.counting = counting  # off with `metrics: false`: the hot path then skips its counters
        self.counter = 0

    def health_changed(self) -> None:
        """A health-checked target went up or down: decisions made under the old health are void."""
        self.state.decisions = {}

    def answer(self, query: Query, client: str, udp: bool) -> bytes:
        """The reference path of the current state (see State.answer)."""
        return self.state.answer(query, client, udp)

    def respond(self, data: bytes, client: str, udp: bool = True) -> bytes | None:
        """The response bytes for one packet from `client`, or None to send nothing."""
        self.counter += 1
        if (self.counter % LATENCY_SAMPLE or not self.counting) and not self.query_log:
            state = self.state  # once: a reload swapping it meanwhile must not mix generations
            entry = (state.hot_udp if udp else state.hot_tcp).get(data[2:])
            if entry is not None:  # the common case, one call deep
                return self._hit(state, entry, data, client, udp)
            return self._respond(data, client, udp)
        started = time.perf_counter()
        response = self._respond(data, client, udp)
        if self.counting:
            self.stats.observe(time.perf_counter() - started)
        if self.query_log and random.random() < self.query_log:
            self._log(data, client, response, udp)
        return response

    def _respond(self, data: bytes, client: str, udp: bool) -> bytes | None:
        state = self.state  # once: a reload swapping it meanwhile must not mix generations
        hot = state.hot_udp if udp else state.hot_tcp
        entry = hot.get(data[2:])
        if entry is not None:
            return self._hit(state, entry, data, client, udp)
        # Resolvers that randomise the case of names (0x20) would never hit: entries are kept
        # under the lower-case question, and the query's own case is put back.
        lowered = _lower_question(data)
        if lowered is not data:
            entry = hot.get(lowered[2:])
            if entry is not None:
                response = self._hit(state, entry, lowered, client, udp)
                return _with_question_of(response, data)
        response = self._miss(state, lowered, client, udp)
        return _with_question_of(response, data) if lowered is not data else response

    def _hit(self, state: State, entry: object, data: bytes, client: str, udp: bool) -> bytes | None:
        if entry.__class__ is tuple:  # (response after the ID, queries cell, RRL category, RRL name, ECS)
            if self.counting:
                entry[1][0] += 1  # type: ignore[index]
                if entry[4]:  # type: ignore[index]
                    self.stats.ecs[0] += 1
            if udp and self.rrl is not None:
                return self._limit(data[:2] + entry[0], client, entry[2], entry[3])  # type: ignore[index]
            return data[:2] + entry[0]  # type: ignore[index]
        # a Dynamic entry: the client's decision (cached), a weighted draw, the response for that draw
        decisions = state.decisions  # once: a health change swapping it must not take a stale decision in
        key = (None if entry.client_free else client, entry)  # the entry itself: an id() could be reused
        decided = decisions.get(key)
        if decided is None:
            decided = state.decided(entry.query, entry.resolution, client)
            decided.answer_cells = tuple(self.stats.answer_cell(k) for k in decided.answer_keys)
            _bounded_put(decisions, key, decided)
        draw = decided.single.draw() if decided.single is not None else decided.draw()
        response = decided.responses.get(draw)
        if response is None:
            choice = decided.chosen(draw)
            response = state.materialize(entry.query, entry.resolution, choice, decided.scope, entry.udp)[2:]
            decided.responses[draw] = response
        if self.counting:
            entry.cell[0] += 1
            for cell in decided.answer_cells:
                cell[0] += 1
            if entry.has_ecs:
                self.stats.ecs[0] += 1
        if udp and self.rrl is not None:
            return self._limit(data[:2] + response, client, CATEGORY_ANSWER, entry.rrl_name)
        return data[:2] + response

    def _miss(self, state: State, data: bytes, client: str, udp: bool) -> bytes | None:
        """First time this query shape is seen (since the cache was last cleared)."""
        try:
            query = fast_parse(data)  # raises Malformed too (a bad ECS)
            if query is None:
                query = full_parse(data)
        except Malformed as exc:
            if exc.rcode is None:
                self.stats.dropped["malformed"] += 1
                return None
            self.stats.query_cell(("", "OTHER", RCODES.get(exc.rcode, "OTHER"), "udp" if udp else "tcp"))[0] += 1
            response = error_response(exc.query_id, exc.flags, exc.rcode, exc.question, exc.edns)
            if udp and self.rrl is not None:
                return self._limit(response, client, CATEGORY_ERROR, b"")
            return response
        if query is None:
            self.stats.dropped["not a query"] += 1
            return None
        resolution = state.resolve(query)
        zone = resolution.zone.text if resolution.zone is not None else ""
        hot = state.hot_udp if udp else state.hot_tcp
        if resolution.dynamic:
            ecs = state.client_subnet(query)
            stats_key = (zone, qtype_label(query.qtype), RCODES.get(resolution.rcode, "OTHER"), "udp" if udp else "tcp")
            entry = Dynamic(query, resolution, udp, self.stats.query_cell(stats_key), ecs is not None and ecs.usable())
            self._hot_put(state, hot, data[2:], entry)
            return self._hit(state, entry, data, client, udp)
        response = state.answer(query, client, udp, resolution)
        rcode = response[3] & 0xF
        stats_key = (zone, qtype_label(query.qtype), RCODES.get(rcode, "OTHER"), "udp" if udp else "tcp")
        if rcode == 0:
            category, name = CATEGORY_ANSWER, query.qname + query.qtype.to_bytes(2, "big")
        elif rcode == 3 and resolution.zone is not None:
            category, name = CATEGORY_NXDOMAIN, resolution.zone.wire  # per zone: random names count as one
        else:
            category, name = CATEGORY_ERROR, b""
        has_ecs = query.edns is not None and query.edns.ecs is not None
        entry = (response[2:], self.stats.query_cell(stats_key), category, name, has_ecs)
        self._hot_put(state, hot, data[2:], entry)
        return self._hit(state, entry, data, client, udp)

    @staticmethod
    def _hot_put(state: State, hot: dict[bytes, object], key: bytes, entry: object) -> None:
        if len(hot) >= HOT_LIMIT:
            hot.clear()
            state.decisions = {}  # they hold entries alive: let both generations go together
        hot[key] = entry

    def _limit(self, response: bytes, client: str, category: int, name: bytes) -> bytes | None:
        assert self.rrl is not None
        limited = self.rrl.filter(response, client, category, name)
        if limited is not response:
            self.stats.dropped["rrl-slip" if limited is not None else "rrl"] += 1
        return limited

    def _log(self, data: bytes, client: str, response: bytes | None, udp: bool) -> None:
        """One sampled query, as a JSON line (the collector's format whatever the log format)."""
        try:
            query = fast_parse(data) or full_parse(data)
        except Malformed:
            query = None
        state = self.state
        entry = (state.hot_udp if udp else state.hot_tcp).get(_lower_question(data)[2:])
        ecs = query.edns.ecs if query is not None and query.edns is not None else None
        log.info("query %s", json.dumps({
            "client": client,
            "transport": "udp" if udp else "tcp",
            "ecs": f"{ecs.ip}/{ecs.source}" if ecs is not None else None,
            "qname": query.name.to_text() if query is not None else None,
            "qtype": dns.rdatatype.to_text(query.qtype) if query is not None else None,
            "rcode": RCODES.get(response[3] & 0xF, "OTHER") if response else None,
            "pools": [f"{record}:{pool}" for _, record, pool in _pools(state, entry, client)],
        }))


def client_for(ecs: ClientSubnet | None, client: str) -> tuple[Address, int, bool]:
    """Who a decision is for: (address, source prefix, whether the answer needs an ECS scope).

    A usable ECS option (RFC 7871: prefix above 0, a global address) stands for the client;
    otherwise the packet's source, the resolver, does.
    """
    if ecs is not None and ecs.usable():
        return ecs.ip, ecs.source, True
    address = _client_address(client)
    return address, address.max_prefixlen, False


def _lower_question(data: bytes) -> bytes:
    """`data` with its question name in lower case (the same object when it already is, or has none)."""
    end = question_name_end(data)
    if end < 0:
        return data
    name = data[12:end]
    lowered = name.lower()  # ASCII letters only, as DNS compares names; length octets are below 64
    return data if lowered == name else data[:12] + lowered + data[end:]


def _with_question_of(response: bytes | None, query: bytes) -> bytes | None:
    """The response with the question name bytes of `query` (its 0x20 case) put back."""
    if response is None:
        return None
    end = question_name_end(query)
    if end < 0 or response[12:end].lower() != query[12:end].lower():
        return response  # an error reply without that question: nothing to put back
    return response[:12] + query[12:end] + response[end:]


class NegativeTemplate:
    """A negative response for any name of a zone, from two renderings by dnspython.

    Rendered for the apex and for one label under it, the two differ only in the
    compression pointers that point at the zone's name inside the question; for
    another name those bytes point where the zone's name starts in its question.
    A name ending in the SOA's own names would compress differently: not templated.
    """

    __slots__ = ("head", "pieces", "pointers", "origin_length", "avoid", "opt_from_end")

    def __init__(self, head: bytes, pieces: list[bytes], pointers: int, origin_length: int,
                 avoid: tuple[bytes, ...], opt_from_end: int) -> None:
        self.head, self.pieces, self.pointers = head, pieces, pointers
        self.origin_length, self.avoid, self.opt_from_end = origin_length, avoid, opt_from_end

    @classmethod
    def build(cls, render_for: Callable[[dns.name.Name], Rendered], origin: dns.name.Name, soa: object) -> "NegativeTemplate | None":
        apex = render_for(origin)
        below = render_for(dns.name.Name((b"a",) + origin.labels))
        origin_wire = origin.canonicalize().to_wire()
        qend_apex = 12 + len(origin_wire) + 4
        tail_apex, tail_below = apex.wire[qend_apex:], below.wire[qend_apex + 2:]
        if len(tail_apex) != len(tail_below) or apex.truncated:
            return None
        cuts = [i for i in range(len(tail_apex)) if tail_apex[i] != tail_below[i]]
        if any(tail_apex[i] != 12 or tail_below[i] != 14 or tail_apex[i - 1] != 0xC0 for i in cuts):
            return None  # not just pointers at the zone's name: render every name instead
        pieces, last = [], 0
        for i in cuts:
            pieces.append(tail_apex[last:i - 1])
            last = i + 1
        pieces.append(tail_apex[last:])
        avoid = tuple(n.canonicalize().to_wire() for n in (soa.mname, soa.rname))  # type: ignore[attr-defined]
        opt_from_end = len(apex.wire) - apex.opt_rdlen_at if apex.opt_rdlen_at >= 0 else -1
        return cls(apex.wire[:12], pieces, len(cuts), len(origin_wire), avoid, opt_from_end)

    def render(self, query: Query) -> Rendered | None:
        qname = query.qname
        if qname.endswith(self.avoid[0]) or qname.endswith(self.avoid[1]):
            return None
        pointer = (0xC000 | (12 + len(qname) - self.origin_length)).to_bytes(2, "big")
        wire = self.head + query.question + pointer.join(self.pieces)
        return Rendered(wire, len(wire) - self.opt_from_end if self.opt_from_end >= 0 else -1, False)


def _with_name(query: Query, name: dns.name.Name) -> Query:
    """The same query for another name (to render a template)."""
    wire = name.canonicalize().to_wire()
    return Query(query.id, query.flags, wire, query.qtype, query.qclass,
                 wire + query.question[-4:], query.edns)


def _pools(state: State, entry: object, client: str) -> tuple[tuple[str, str, str], ...]:
    """(zone, record, pool) of what a dynamic entry answered this client, for the query log."""
    if not isinstance(entry, Dynamic):
        return ()
    decided = state.decisions.get((None if entry.client_free else client, entry))
    return decided.answer_keys if decided is not None else ()


def _rdataset(record: DynamicRRset, values: tuple[PoolValue, ...]) -> dns.rdataset.Rdataset:
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, record.rdtype, ttl=record.ttl)
    for value in values:
        rdataset.add(value.rdata)
    return rdataset


def _client_address(client: str) -> Address:
    address = ipaddress.ip_address(client.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 client
    return address


def _bounded_put(cache: dict, key: object, value: object) -> None:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value
