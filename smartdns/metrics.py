"""Metrics: cheap counting on the hot path, Prometheus exposition off it.

The query path only bumps plain dict counters (`Stats`); prometheus-client (the
only module importing it is this one) turns them into metrics at scrape time
through a custom collector. Workers send their `Stats` snapshots to the
supervisor, which serves the sum, so one scrape shows the whole server. The
same HTTP listener answers `/health` (alive) and `/ready` (zones loaded).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import dns.rdatatype
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger("smartdns")

# Latency buckets (seconds) of the time spent answering one query inside smartdns.
BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1)
REQUEST_DEADLINE = 10.0  # seconds for a whole HTTP request and its answer
LATENCY_SAMPLE = 16  # time one query in this many: two clock reads per query would cost more than they tell

KNOWN_QTYPES = frozenset({"A", "AAAA", "ANY", "CAA", "CNAME", "DNAME", "DNSKEY", "DS", "HTTPS", "LOC", "MX",
                          "NAPTR", "NS", "NSEC", "OPENPGPKEY", "PTR", "SOA", "SPF", "SRV", "SSHFP", "SVCB",
                          "TLSA", "TXT", "URI", "AXFR", "IXFR"})
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
          16: "BADVERS"}


_QTYPE_LABELS: dict[int, str] = {}


def qtype_label(qtype: dns.rdatatype.RdataType) -> str:
    """Attacker-chosen types must not mint label values: the rest is OTHER."""
    label = _QTYPE_LABELS.get(qtype)
    if label is None:
        from dns.rdatatype import to_text  # only on the first sight of a type

        try:
            text = to_text(qtype)
        except Exception:
            text = "OTHER"
        label = _QTYPE_LABELS[qtype] = text if text in KNOWN_QTYPES else "OTHER"  # at most 65536 entries
    return label


Cell = list[int]  # [count]: what the hot path bumps, without hashing its labels on every query
QueryLabels = tuple[str, str, str, str]  # zone, qtype, rcode, transport
AnswerLabels = tuple[str, str, str]  # zone, record, pool


@dataclass
class Stats:
    """One process's counters; only ever incremented, snapshots are plain data.

    `queries` and `answers` map label tuples to cells that cached responses keep a
    reference to, so counting a query is `cell[0] += 1`.
    """

    queries: dict[QueryLabels, Cell] = field(default_factory=dict)
    answers: dict[AnswerLabels, Cell] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)  # reason
    ecs: Cell = field(default_factory=lambda: [0])
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0

    def query_cell(self, key: QueryLabels) -> Cell:
        cell = self.queries.get(key)
        if cell is None:
            cell = self.queries[key] = [0]
        return cell

    def answer_cell(self, key: AnswerLabels) -> Cell:
        cell = self.answers.get(key)
        if cell is None:
            cell = self.answers[key] = [0]
        return cell

    def observe(self, seconds: float) -> None:
        index = 0
        for index, bound in enumerate(BUCKETS):  # noqa: B007 - a dozen buckets: a loop beats bisect's call
            if seconds <= bound:
                break
        else:
            index = len(BUCKETS)
        self.latency_buckets[index] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def snapshot(self) -> dict[str, Any]:
        # list(...items()) copies in one step under the GIL: the UDP threads keep counting meanwhile
        return {
            "queries": [[*k, c[0]] for k, c in list(self.queries.items())],
            "answers": [[*k, c[0]] for k, c in list(self.answers.items())],
            "dropped": [[k, v] for k, v in list(self.dropped.items())],
            "ecs": self.ecs[0],
            "latency": [list(self.latency_buckets), self.latency_sum, self.latency_count],
        }

    def add(self, snapshot: dict[str, Any]) -> None:
        for *key, value in snapshot["queries"]:
            self.query_cell(tuple(key))[0] += value
        for *key, value in snapshot["answers"]:
            self.answer_cell(tuple(key))[0] += value
        for key, value in snapshot["dropped"]:
            self.dropped[key] += value
        self.ecs[0] += snapshot["ecs"]
        buckets, total, count = snapshot["latency"]
        self.latency_buckets = [a + b for a, b in zip(self.latency_buckets, buckets)]
        self.latency_sum += total
        self.latency_count += count


@dataclass
class ServerStatus:
    """What the process that owns the zones knows about them and about health."""

    zones: int = 0
    records: int = 0
    reloads_ok: int = 0
    reloads_failed: int = 0
    last_good_load: float = 0.0  # unix time
    ready: bool = False
    health: list[tuple[str, str, int, bool, float]] = field(default_factory=list)  # address, protocol, port, up, since

    def loaded(self, zones: int, records: int, ok: bool, reload: bool) -> None:
        """After every load: `ok` when no zone had a problem."""
        self.zones, self.records = zones, records
        if reload:
            if ok:
                self.reloads_ok += 1
            else:
                self.reloads_failed += 1
        if ok:
            self.last_good_load = time.time()
        self.ready = zones > 0

    def follow_health(self, states: Iterable[tuple[Any, Any]]) -> None:
        """From HealthMonitor.states: (target, state) pairs."""
        self.health = [(t.address, t.check.protocol, t.check.port, s.up, s.changed_at) for t, s in states]


def combined(*parts: Stats | dict[str, Any]) -> Stats:
    """One Stats adding up live ones and snapshots (workers', or those of workers that exited)."""
    total = Stats()
    for part in parts:
        total.add(part.snapshot() if isinstance(part, Stats) else part)
    return total


@dataclass(frozen=True)
class Family:
    """A metric family as plain data, for services that are not the DNS server (smartdns route).

    `kind` counter or gauge: `samples` are (label values, value); histogram: (label values,
    cumulative [(upper bound, count)...], sum).
    """

    kind: str
    name: str
    help: str
    labels: tuple[str, ...] = ()
    samples: tuple[tuple[Any, ...], ...] = ()


class _Families:
    def __init__(self, families: Callable[[], Iterable[Family]]) -> None:
        self.families = families

    def collect(self) -> Iterable[Any]:
        kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        for family in self.families():
            metric = kinds[family.kind](family.name, family.help, labels=list(family.labels))
            for labels, *value in family.samples:
                metric.add_metric(list(labels), *value)
            yield metric


class _Collector:
    def __init__(self, stats: Callable[[], Stats], status: Callable[[], ServerStatus]) -> None:
        self.stats, self.status = stats, status

    def collect(self) -> Iterable[Any]:
        stats, status = self.stats(), self.status()
        queries = CounterMetricFamily("smartdns_queries", "Queries answered", labels=["zone", "qtype", "rcode", "transport"])
        for (zone, qtype, rcode, transport), cell in sorted(stats.queries.items()):
            queries.add_metric([zone, qtype, rcode, transport], cell[0])
        yield queries
        answers = CounterMetricFamily("smartdns_answers",
                                      "Dynamic answers by pool (default: plain values, fail-open: nothing was up)",
                                      labels=["zone", "record", "pool"])
        for (zone, record, pool), cell in sorted(stats.answers.items()):
            answers.add_metric([zone, record, pool], cell[0])
        yield answers
        yield CounterMetricFamily("smartdns_ecs_queries", "Queries that carried an EDNS Client Subnet option", value=stats.ecs[0])
        dropped = CounterMetricFamily("smartdns_dropped_packets", "Packets not answered", labels=["reason"])
        for reason, value in sorted(stats.dropped.items()):
            dropped.add_metric([reason], value)
        yield dropped
        cumulative, running = [], 0
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], stats.latency_buckets):
            running += count
            cumulative.append((bound, running))
        latency = HistogramMetricFamily("smartdns_response_seconds",
                                        f"Time to answer a query inside smartdns (one query in {LATENCY_SAMPLE} timed)")
        latency.add_metric([], cumulative, stats.latency_sum)
        yield latency
        yield GaugeMetricFamily("smartdns_zones_loaded", "Zones being served", value=status.zones)
        yield GaugeMetricFamily("smartdns_records_loaded", "Records being served", value=status.records)
        reloads = CounterMetricFamily("smartdns_reloads", "Reloads by result", labels=["result"])
        reloads.add_metric(["success"], status.reloads_ok)
        reloads.add_metric(["failure"], status.reloads_failed)
        yield reloads
        yield GaugeMetricFamily("smartdns_last_good_load_timestamp_seconds", "When every zone last loaded without error",
                                value=status.last_good_load)
        up = GaugeMetricFamily("smartdns_health_up", "Health-checked target is up (1) or down (0)",
                               labels=["target", "protocol", "port"])
        since = GaugeMetricFamily("smartdns_health_last_change_timestamp_seconds", "When the target's state last changed",
                                  labels=["target", "protocol", "port"])
        for address, protocol, port, is_up, changed in status.health:
            up.add_metric([address, protocol, str(port)], 1 if is_up else 0)
            since.add_metric([address, protocol, str(port)], changed)
        yield up
        yield since


class MetricsServer:
    """A tiny HTTP/1.0 listener: /metrics, /health, /ready. It never stops DNS service."""

    def __init__(self, stats: Callable[[], Stats] | None, status: Callable[[], ServerStatus],
                 extra: Callable[[], Iterable[Family]] | None = None) -> None:
        """`stats` None: not the DNS server, only the `extra` families (another smartdns service)."""
        self.registry = CollectorRegistry(auto_describe=False)
        if stats is not None:
            self.registry.register(_Collector(stats, status))
        if extra is not None:
            self.registry.register(_Families(extra))
        self.status = status
        self.server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int | None:
        try:
            self.server = await asyncio.start_server(self._client, host, port)
        except OSError as exc:
            log.error("metrics listener %s:%d not started: %s (DNS service goes on)", host, port, exc)
            return None
        bound: int = self.server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics (/health, /ready)", host if ":" not in host else f"[{host}]", bound)
        return bound

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def close_in_child(self) -> None:
        """In a forked worker: let go of the listening sockets without touching the parent's loop."""
        if self.server is not None:
            for sock in self.server.sockets:
                try:
                    os.close(sock.fileno())
                except OSError:
                    pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._answer(reader, writer), REQUEST_DEADLINE)
        except (asyncio.TimeoutError, ConnectionError, UnicodeError, ValueError, asyncio.LimitOverrunError):
            pass  # a slow, broken or oversized request: dropped
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        for _ in range(100):  # headers: nothing in them matters here
            if not (await reader.readline()).strip():
                break
        parts = request.decode("latin-1").split()
        path = parts[1].split("?")[0] if len(parts) > 1 else ""
        if path == "/metrics":
            status, body, kind = 200, generate_latest(self.registry), "text/plain; version=0.0.4; charset=utf-8"
        elif path == "/health":
            status, body, kind = 200, b"ok\n", "text/plain"
        elif path == "/ready":
            ready = self.status().ready
            status, body, kind = (200, b"ready\n", "text/plain") if ready else (503, b"zones not loaded\n", "text/plain")
        else:
            status, body, kind = 404, b"not found\n", "text/plain"
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        writer.write(f"HTTP/1.0 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
