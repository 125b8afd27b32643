"""The hot cache: whole responses by query bytes, in front of the reference path.

A response depends only on the query's bytes after its ID (the question's name
compared in lower case), the loaded data, health, and — for dynamic records —
the client and a weighted random pick. So the first answer to a given query
shape is kept under those bytes (`State.hot_udp`/`hot_tcp`), and every later
identical query costs one dict lookup and one concatenation with its own ID
(and its own case of the name); a dynamic answer adds the client's (cached)
decision and the pick. Everything else goes through `State.answer()`, the
reference path (responder.py). Both give byte-identical responses
(tests/test_authoritative.py, tests/test_fastpaths.py).

Caches are bounded (cleared when full, so a random-name flood cannot grow
memory) and belong to one `State`, which a reload replaces whole; every query
takes the state once, and a health change replaces the decisions, which each
query also takes once, so nothing decided under old health or data survives.
The threading model is described in responder.py.
"""

from __future__ import annotations

import logging
import random
import time
from typing import final

import dns.rdatatype

from .catalog import Resolution
from .logs import Fields
from .metrics import LATENCY_SAMPLE, RCODES, Stats, qtype_label
from .responder import State, bounded_put
from .retire import release
from .rrl import CATEGORY_ANSWER, CATEGORY_ERROR, CATEGORY_NXDOMAIN, RateLimiter
from .wire import Malformed, Query, error_response, fast_parse, full_parse, question_name_end

log = logging.getLogger("smartdns.query")

# Whole responses by query bytes: a random-ECS flood makes every query a new entry of about
# 2 KB with its decision, so this bound is what caps memory (about 60 MB at most).
HOT_LIMIT = 30_000


@final  # no subclasses: `type(entry) is StaticHit` is then a complete test
class StaticHit:
    """A hot entry whose response is the same for every client: the bytes after the ID."""

    __slots__ = ("response", "cell", "category", "rrl_name", "has_ecs")

    def __init__(self, response: bytes, cell: list[int], category: int, rrl_name: bytes, has_ecs: bool) -> None:
        self.response = response
        self.cell = cell  # the queries counter for this shape
        self.category = category  # for RRL
        self.rrl_name = rrl_name
        self.has_ecs = has_ecs


@final
class DynamicHit:
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


HotEntry = StaticHit | DynamicHit


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

    def _hit(self, state: State, entry: HotEntry, data: bytes, client: str, udp: bool) -> bytes | None:
        if type(entry) is StaticHit:  # the common case; as cheap as the tuple test it replaced, and mypy narrows it
            if self.counting:
                entry.cell[0] += 1
                if entry.has_ecs:
                    self.stats.ecs[0] += 1
            if udp and self.rrl is not None:
                return self._limit(data[:2] + entry.response, client, entry.category, entry.rrl_name)
            return data[:2] + entry.response
        # a DynamicHit: the client's decision (cached), a weighted draw, the response for that draw
        decisions = state.decisions  # once: a health change swapping it must not take a stale decision in
        key = (None if entry.client_free else client, entry)  # the entry itself: an id() could be reused
        decided = decisions.get(key)
        if decided is None:
            decided = state.decided(entry.query, entry.resolution, client)
            decided.answer_cells = tuple(self.stats.answer_cell(k) for k in decided.answer_keys)
            bounded_put(decisions, key, decided)
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
            hit = DynamicHit(query, resolution, udp, self.stats.query_cell(stats_key), ecs is not None and ecs.usable())
            self._hot_put(state, hot, data[2:], hit)
            return self._hit(state, hit, data, client, udp)
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
        entry = StaticHit(response[2:], self.stats.query_cell(stats_key), category, name, has_ecs)
        self._hot_put(state, hot, data[2:], entry)
        return self._hit(state, entry, data, client, udp)

    @staticmethod
    def _hot_put(state: State, hot: dict[bytes, HotEntry], key: bytes, entry: HotEntry) -> None:
        if len(hot) >= HOT_LIMIT:
            spent, decisions = dict(hot), state.decisions
            hot.clear()  # the entries live on in `spent`: nothing is freed here, in the answering thread
            state.decisions = {}  # they hold entries alive: let both generations go together
            release(spent, decisions)  # freed a piece at a time in the background
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
        log.info("query %s", Fields({
            "client": client,
            "transport": "udp" if udp else "tcp",
            "ecs": f"{ecs.ip}/{ecs.source}" if ecs is not None else None,
            "qname": query.name.to_text() if query is not None else None,
            "qtype": dns.rdatatype.to_text(query.qtype) if query is not None else None,
            "rcode": RCODES.get(response[3] & 0xF, "OTHER") if response else None,
            "pools": [f"{record}:{pool}" for _, record, pool in _pools(state, entry, client)],
        }))


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


def _pools(state: State, entry: HotEntry | None, client: str) -> tuple[tuple[str, str, str], ...]:
    """(zone, record, pool) of what a dynamic entry answered this client, for the query log."""
    if not isinstance(entry, DynamicHit):
        return ()
    decided = state.decisions.get((None if entry.client_free else client, entry))
    return decided.answer_keys if decided is not None else ()
