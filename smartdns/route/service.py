"""`smartdns route`: the socketmap service wired together (keys, decisions, metrics, trouble, relays)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..config import Config, HealthSettings
from ..geo import Classifier
from ..metrics import Family, MetricsServer, ServerStatus
from .decide import NOTFOUND, Decision, decide
from .mx import MxCache, ascii_domain
from .postfixlog import LogWatcher
from .relays import RelayPool
from .settings import RouteSettings
from .socketmap import SocketmapServer
from .trouble import TroubleBook

log = logging.getLogger("smartdns.route")

MAX_KEY = 512  # longer keys are no mail address Postfix would route
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.3, 1.0)
ZONES_RESCAN = 30.0  # seconds between looks at the zones directory for our own domains
HOUSEKEEPING = 5.0  # seconds between expiry sweeps


def zone_domains(directory: Path) -> frozenset[str]:
    """The zones served from a directory (`<zone>.yaml`): mail to them is ours."""
    try:
        return frozenset(p.name[:-5].lower().rstrip(".") for p in directory.glob("*.yaml"))
    except OSError:
        return frozenset()


class RouteService:
    def __init__(self, config: Config, settings: RouteSettings | None = None, continent_of: dict[str, str] | None = None) -> None:
        from ..zonefile import CONTINENT_OF  # the country -> continent table the DNS side uses

        self.config = config
        self.settings = settings or config.route or RouteSettings()
        self.classifier = Classifier(config.geodb, continent_of or CONTINENT_OF)
        self.mx = MxCache(self.settings.resolvers)
        self.trouble = TroubleBook(self.settings.trouble, self.settings.state_file)
        self.relays = RelayPool(self.settings.relays, self.settings.health or config.health or HealthSettings())
        self.local = frozenset(self.settings.local_domains) | zone_domains(config.zones)
        self.last_answer: dict[str, float] = {}  # domain -> monotonic time of our last answer for it
        self.decisions: Counter[tuple[str, str]] = Counter()  # (answer, relay)
        self.errors = 0
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.unknown_maps: set[str] = set()
        self.watcher: LogWatcher | None = None  # learns trouble from Postfix's log, when route.postfix_log is set
        self._tasks: list[asyncio.Task[None]] = []

    # --- one lookup ---------------------------------------------------------------------------

    async def lookup(self, name: str, key: str) -> str:
        if name != self.settings.map_name:
            if name not in self.unknown_maps and len(self.unknown_maps) < 100:
                self.unknown_maps.add(name)
                log.warning("route: asked for map %r, this service answers %r: NOTFOUND (check transport_maps)",
                            name[:64], self.settings.map_name)
            return NOTFOUND
        domain = self.domain_of(key)
        if domain is None:
            return NOTFOUND
        decision = await self.decide(domain, self.settings.lookup_deadline)
        self.decisions[(decision.answer, decision.relay or "")] += 1
        if decision.answer in ("direct", "relay"):
            self.remember_answer(domain)
        return decision.reply

    def domain_of(self, key: str) -> str | None:
        """The recipient domain of a key: `user@domain`, or a bare `domain` (Postfix asks both); None otherwise."""
        if len(key) > MAX_KEY:
            log.warning("route: key of %d characters ignored (NOTFOUND)", len(key))
            return None
        if key == "*" or key.startswith("."):  # the catch-all and parent-domain probes: the default
            return None
        _, at, domain = key.rpartition("@")
        if at and not domain:
            return None
        return ascii_domain(domain)

    def remember_answer(self, domain: str) -> None:
        if len(self.last_answer) > 100_000:
            self.last_answer.clear()
        self.last_answer[domain] = time.monotonic()

    async def decide(self, domain: str, deadline: float | None) -> Decision:
        local = domain in self.local
        mx = None if local else await self.mx.get(domain, deadline)
        return decide(domain, local=local, mx=mx, home=self.settings.home, locate=self.classifier.locate,
                      troubled=self.trouble.is_troubled, relays=self.relays)

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS) if seconds <= bound), len(LATENCY_BUCKETS))
        self.latency[index] += 1
        self.latency_sum += seconds

    # --- running --------------------------------------------------------------------------------

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        server = SocketmapServer(self.lookup, observe=self.observe)
        listen = self.settings.listen
        port = await server.start(listen.host, listen.port)
        metrics = None
        if self.settings.metrics is not None:
            metrics = MetricsServer(None, lambda: ServerStatus(ready=True), self.families)
            await metrics.start(self.settings.metrics.host, self.settings.metrics.port)
        self.relays.start()
        if self.settings.postfix_log is not None:
            self.watcher = LogWatcher(self)
            self._tasks.append(asyncio.ensure_future(self.watcher.run()))
        self._tasks.append(asyncio.ensure_future(self._housekeeping()))
        host = f"[{listen.host}]" if ":" in listen.host else listen.host
        log.info("route: socketmap %r listening on %s:%d; home %s; %d relay(s); %d local domain(s)",
                 self.settings.map_name, host, port, ",".join(self.settings.home) or "none",
                 len(self.settings.relays), len(self.local))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._rescan)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("route: stopping")
        server.close()
        if metrics is not None:
            metrics.close()
        self.relays.stop()
        for task in self._tasks:
            task.cancel()

    def _rescan(self) -> None:
        local = frozenset(self.settings.local_domains) | zone_domains(self.config.zones)
        if local != self.local:
            log.info("route: %d local domain(s) now", len(local))
            self.local = local

    async def _housekeeping(self) -> None:
        last_scan = time.monotonic()
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            try:
                self.trouble.expire_all()
                if time.monotonic() - last_scan >= ZONES_RESCAN:
                    last_scan = time.monotonic()
                    self._rescan()
            except Exception:
                log.exception("route: housekeeping")

    # --- metrics --------------------------------------------------------------------------------

    def families(self) -> Iterable[Family]:
        yield Family("counter", "smartdns_route_decisions", "Answers given to Postfix by kind and relay",
                     ("answer", "relay"), tuple(((a, r), n) for (a, r), n in sorted(self.decisions.items())))
        cumulative, running = [], 0
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.latency):
            running += count
            cumulative.append((bound, running))
        yield Family("histogram", "smartdns_route_lookup_seconds", "Time to answer one socketmap request",
                     (), (((), cumulative, self.latency_sum),))
        yield Family("counter", "smartdns_route_mx_lookups", "MX lookups started (cache misses and refreshes)",
                     (), (((), self.mx.lookups),))
        troubled = Counter(key.split(":", 1)[0] for key in self.trouble.current())
        yield Family("gauge", "smartdns_route_troubled", "Destinations sent straight to a relay now, by kind",
                     ("kind",), tuple(((kind,), troubled.get(kind, 0)) for kind in ("domain", "net")))
        yield Family("counter", "smartdns_route_trouble_changes", "Destinations that became troubled or recovered",
                     (), (((), self.trouble.changes),))
        statuses = self.relays.status()
        yield Family("gauge", "smartdns_route_relay_up", "Relay passes its TLS/AUTH probe (1) or not (0)",
                     ("relay",), tuple(((s.relay.name,), 1 if s.up else 0) for s in statuses))
        yield Family("gauge", "smartdns_route_relay_rtt_seconds", "Relay TCP connect round-trip, smoothed",
                     ("relay",), tuple(((s.relay.name,), s.rtt) for s in statuses if s.rtt is not None))
        if self.watcher is not None:
            yield from self.watcher.families()
