"""One query in, one response out: parse, look up, decide, render (cached), splice.

Everything a response depends on is in its cache key: the question, the EDNS
shape (present, DO, NSID asked) and, for dynamic records, which values this
client was given. The ID, RD/CD bits, the question's case and the ECS option
are spliced in per query. Caches are bounded and belong to one `State`, which a
reload replaces whole.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from typing import Callable

import dns.rdataclass
import dns.rdataset
import dns.rdatatype

from .catalog import Catalog, Entry, Resolution, REFUSE
from .geo import Classifier, Location
from .policy import DynamicRRset, IsUp, PoolValue, decide, pick, scope_prefix, static_status
from .wire import (
    REFUSED, Malformed, Query, Rendered, error_response, fast_parse, full_parse, render, splice,
)
from .zonefile import StaticRRset

log = logging.getLogger(__name__)

CACHE_LIMIT = 50_000  # entries per cache; cleared when full (a random-name flood cannot grow memory)
REFUSED_TYPES = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB})
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True)
class Answered:
    """What happened to one query, for metrics and the query log."""

    rcode: int = 0
    zone: str = ""
    pools: tuple[tuple[str, str], ...] = ()  # (record name, pool) for each dynamic record answered
    ecs: bool = False


@dataclass
class State:
    """The data one generation of answers comes from; replaced whole on reload."""

    catalog: Catalog
    classifier: Classifier
    resolutions: dict[tuple[bytes, int], Resolution] = field(default_factory=dict)
    rendered: dict[tuple, Rendered] = field(default_factory=dict)


class Responder:
    def __init__(self, state: State, *, ecs: bool = True, is_up: IsUp = static_status,
                 nsid: bytes | None = None) -> None:
        self.state = state
        self.ecs = ecs
        self.is_up = is_up
        self.nsid = nsid

    def health_changed(self) -> None:
        """Called when a health-checked target goes up or down: decisions must be made afresh."""

    def respond(self, data: bytes, client: str, udp: bool = True, info: Answered | None = None) -> bytes | None:
        """The response bytes for one packet from `client`, or None to send nothing."""
        try:
            query = fast_parse(data)  # raises Malformed too (a bad ECS)
            if query is None:
                query = full_parse(data)
        except Malformed as exc:
            if info is not None:
                info.rcode = exc.rcode if exc.rcode is not None else -1
            if exc.rcode is None:
                return None
            return error_response(exc.query_id, exc.flags, exc.rcode, exc.question, exc.edns)
        if query is None:
            return None
        return self.answer(query, client, udp, info)

    def answer(self, query: Query, client: str, udp: bool, info: Answered | None = None) -> bytes:
        state = self.state
        if query.qclass != dns.rdataclass.IN or query.qtype in REFUSED_TYPES:
            resolution = REFUSE  # no other classes; no zone transfers (RFC 5936 lets us refuse)
        else:
            key = (query.qname, query.qtype)
            resolution = state.resolutions.get(key)  # type: ignore[assignment]
            if resolution is None:
                resolution = state.catalog.resolve(query.name, query.qtype)
                _bounded_put(state.resolutions, key, resolution)
        if resolution is REFUSE:
            if info is not None:
                info.rcode = REFUSED
            return error_response(query.id, query.flags, REFUSED, query.question, query.edns)

        ecs = query.edns.ecs if (self.ecs and query.edns is not None) else None
        address: Address | None = None
        source_prefix = 0
        if ecs is not None and ecs.usable():
            address, source_prefix = ecs.ip, ecs.source
        choices: tuple = ()
        scope = 0
        pools: list[tuple[str, str]] = []
        if resolution.dynamic:
            if address is None:
                address = _client_address(client)
                source_prefix = address.max_prefixlen
            choices, scope = self._decide(resolution, address, source_prefix, pools, ecs is not None and ecs.usable())
        edns_shape = None if query.edns is None else (query.edns.do, query.edns.nsid)
        key = (query.qname, query.qtype, edns_shape, tuple(tuple(map(id, c)) for c in choices))
        rendered = state.rendered.get(key)
        if rendered is None:
            rendered = self._render(query, resolution, choices, 65535)
            _bounded_put(state.rendered, key, rendered)
        option = ecs.reply(scope) if ecs is not None else b""
        limit = query.udp_limit if udp else 65535
        if len(rendered.wire) + len(option) > limit:
            rendered = self._render(query, resolution, choices, limit - len(option))
        if info is not None:
            info.rcode = resolution.rcode
            info.zone = resolution.zone.origin.to_text() if resolution.zone else ""
            info.pools = tuple(pools)
            info.ecs = ecs is not None
        return splice(rendered, query, option)

    def _decide(self, resolution: Resolution, address: Address, source_prefix: int,
                pools: list[tuple[str, str]], want_scope: bool) -> tuple[tuple[tuple[PoolValue, ...], ...], int]:
        """The values this client gets from each dynamic RRset, and the ECS scope of that choice."""
        classifier = self.state.classifier
        text = str(address)
        locate: Callable[[], Location] = lambda: classifier.locate(text)  # noqa: E731
        choices = []
        scope = 0
        for entry in resolution.answer + resolution.additional:
            record = entry.source
            if not isinstance(record, DynamicRRset):
                continue
            decision = decide(record, address, locate, self.is_up)
            choices.append(pick(decision.candidates, record.max_answers))
            pools.append((record.name, decision.pool))
            if want_scope:
                scope = max(scope, scope_prefix(record.subnets(), address, locate().prefixlen, source_prefix))
        return tuple(choices), scope

    def _render(self, query: Query, resolution: Resolution, choices: tuple, limit: int) -> Rendered:
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
