"""One serving process: UDP and TCP listeners, reloads, signals.

UDP is served by a plain blocking loop per socket in its own thread: measured
on this hardware it costs less per datagram than any event loop (see
bench/RESULTS.md). TCP (RFC 7766: 2-byte framing, several queries per
connection, idle timeout, limits), reloads and health checks run on one asyncio
loop (uvloop when installed). Nothing a client sends may stop either: every
handler catches what it raises. Both call the same `Responder`; what they share
and why that is safe is the threading model in responder.py.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Coroutine

from .bindcheck import BindError, ensure_free
from .bindcheck import explain as explain_bind_error
from .catalog import Catalog
from .collector import keep_full_collections_short
from .config import Config, ListenAddress
from .geo import Classifier
from .health import HealthMonitor, HealthView
from .hotcache import Responder
from .loader import LoaderProcess, SupervisorFeed
from .metrics import MetricsServer, ServerStatus, Stats, combined
from .model import ZoneData
from .policy import IsUp, static_status
from .reload import LoadResult, LoadSequence, load_all, report, signature, watch, watched_directories, watched_files
from .responder import State
from .rrl import RateLimiter
from .zonefile import CONTINENT_OF

log = logging.getLogger("smartdns")

LENGTH = struct.Struct("!H")
UDP_BUFFER = 4096  # a query is never larger; a bigger datagram is cut and answered FORMERR
SOCKET_BUFFER = 4 * 1024 * 1024  # absorbs bursts while the interpreter is busy
TCP_BACKLOG = 1024
SWITCH_INTERVAL = 0.001  # seconds a thread holds the interpreter when another waits for it
CLOSE_DELAY = 5.0  # seconds a replaced GeoIP reader stays open for queries that took the old state


def build_state(config: Config, previous: dict[str, ZoneData] | None = None,
                is_up: IsUp = static_status, sign_at: float | None = None,
                quiet: bool = False) -> tuple[State, LoadResult]:
    """Load in this process (`explain`, the benchmark) and make the serving state."""
    result = load_all(config, previous, sign_at)
    report(result, quiet)
    return state_for(config, result, is_up), result


def state_for(config: Config, result: LoadResult, is_up: IsUp = static_status,
              previous: State | None = None) -> State:
    """`previous`: the state this one replaces, whose work for unchanged zones is taken over."""
    classifier = Classifier(config.geodb, CONTINENT_OF)
    catalog = Catalog(result.zones, previous.catalog if previous is not None else None)
    return State(catalog, classifier, ecs=config.ecs, server_id=config.server_id, is_up=is_up)


@dataclass
class Listener:
    address: ListenAddress  # with the port actually bound
    udp: socket.socket
    tcp: socket.socket


def log_loaded(result: LoadResult, reason: str | None, level: int = logging.INFO) -> None:
    zones = len(result.zones)
    if reason is None:
        log.log(level, "loaded %d zones (%d records)", zones, sum(z.record_count for z in result.zones.values()))
    else:
        log.log(level, "reloaded (%s): %d zones (%d parsed again), %d problems", reason, zones, result.parsed,
                len(result.problems))


def bind_listeners(addresses: tuple[ListenAddress, ...], copies: int = 1) -> list[list[Listener]]:
    """`copies` sets of UDP+TCP sockets on every address (SO_REUSEPORT when more than one).

    Raises BindError (naming the address, the holder, the fix) when an address cannot be had.

    Port 0 picks one ephemeral port for UDP and TCP alike, the same for every copy.
    """
    sets: list[list[Listener]] = [[] for _ in range(copies)]
    for address in addresses:
        ensure_free(address)  # SO_REUSEPORT would share a port with a stranger: only our workers may
        for attempt in range(20):
            try:
                group = _bind_group(address, copies)
            except OSError as exc:
                if address.port or exc.errno != errno.EADDRINUSE or attempt == 19:
                    raise BindError(explain_bind_error(address, exc)) from None
                continue  # an ephemeral UDP port whose TCP twin is taken: try another
            break
        for index, listener in enumerate(group):
            sets[index].append(listener)
    return sets


def _bind_group(address: ListenAddress, copies: int) -> list[Listener]:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    group: list[Listener] = []
    port = address.port
    try:
        for _ in range(copies):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            group.append(Listener(address, udp, tcp))
            for sock in (udp, tcp):
                if copies > 1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    udp.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                except OSError:
                    pass
            udp.bind((address.host, port))
            port = udp.getsockname()[1]
            tcp.bind((address.host, port))
            tcp.listen(TCP_BACKLOG)
    except OSError:
        for listener in group:
            listener.udp.close()
            listener.tcp.close()
        raise
    bound = ListenAddress(address.host, port)
    return [Listener(bound, listener.udp, listener.tcp) for listener in group]


class Server(LoadSequence[State]):
    """Serves queries on the listeners given, from data it loads and reloads itself."""

    def __init__(self, config: Config, listeners: list[Listener], health: HealthView,
                 overrides: dict[str, Any] | None = None, ready: Callable[[], None] = lambda: None,
                 metrics: bool = True, share: float = 1.0, announces: bool = True,
                 feed: SupervisorFeed | None = None) -> None:
        super().__init__(config, overrides or {}, ServerStatus(), health, announces)
        # Where zones come from: a worker's supervisor (`feed`), else a loader process of our own
        # (after the first load, made here): the interpreter that answers queries never parses a zone file.
        self.feed = feed
        self.share = share  # this process's part of the load: the kernel spreads a flood evenly over workers
        self.ready = ready  # called once the data is loaded and the sockets are served
        self.metrics = MetricsServer(self.query_stats, self.current_status) if metrics else None
        self.listeners = listeners
        self.responder: Responder
        self.stopping = asyncio.Event()
        self.tcp_clients: Counter[str] = Counter()
        # open connections, least recently active first: when full, the idlest one makes room
        self.tcp_open: dict[asyncio.StreamWriter, None] = {}
        self.errors_logged = 0.0
        self.tcp_servers: list[asyncio.base_events.Server] = []

    def internal_error(self) -> None:
        now = time.monotonic()
        if now - self.errors_logged > 10:  # at most one traceback every 10 s
            self.errors_logged = now
            log.exception("internal error answering a query")

    def query_stats(self) -> Stats:
        responder = getattr(self, "responder", None)  # none until the first load is in service
        return combined(responder.stats) if responder is not None else Stats()

    def current_status(self) -> ServerStatus:
        if isinstance(self.health, HealthMonitor):
            self.status.follow_health(self.health.states.items())
        return self.status

    async def start(self) -> None:
        if self.feed is None:
            # Forked first, before any thread and before the metrics listener, while this process is
            # small. The first load runs here (nothing is served yet); every reload runs there.
            self.loader = LoaderProcess(self._close_in_child)
        if self.metrics is not None and self.config.metrics is not None:
            # before the zones load, so that /ready can say "not yet"
            await self.metrics.start(self.config.metrics.host, self.config.metrics.port)
        await self.load()
        # Background work in this process (a reload's decode, freeing replaced zones, health probes,
        # metrics) holds the interpreter for up to the switch interval before an answering thread
        # gets it back: 1 ms, not Python's 5, halved p99 during a 50,000-record reload (3 runs each).
        sys.setswitchinterval(SWITCH_INTERVAL)
        keep_full_collections_short()  # what serving makes must not make a full collection long
        for listener in self.listeners:
            threading.Thread(target=self._udp_loop, args=(listener.udp,), daemon=True,
                             name=f"udp {listener.address}").start()
            listener.tcp.setblocking(False)
            self.tcp_servers.append(await asyncio.start_server(self._tcp_client, sock=listener.tcp,
                                                               backlog=TCP_BACKLOG))

    def _udp_loop(self, sock: socket.socket) -> None:
        """Receive, answer, send: the whole UDP hot path (runs in its own thread)."""
        recvfrom, sendto, respond = sock.recvfrom, sock.sendto, self.responder.respond
        while True:
            try:
                data, addr = recvfrom(UDP_BUFFER)
            except OSError as exc:
                if exc.errno in (errno.EBADF, errno.ENOTSOCK) or sock.fileno() < 0:
                    return  # closed at shutdown
                continue  # ICMP errors from earlier sends surface here: nothing to do
            try:
                response = respond(data, addr[0], True)  # the responder object lives as long as we do
                if response is not None:
                    sendto(response, addr)
            except OSError:
                pass  # the client went away (or the send buffer is full): one answer lost
            except Exception:  # a bug must cost one answer, never the server
                self.internal_error()

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.config.tcp
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = peer[0]
        if self.tcp_clients[client] >= limits.max_per_client:
            writer.close()  # one address may not take every slot
            return
        if len(self.tcp_open) >= limits.max_connections:
            idlest = next(iter(self.tcp_open))
            self.tcp_open.pop(idlest)
            idlest.close()  # its handler sees the connection end and cleans up
        self.tcp_open[writer] = None
        self.tcp_clients[client] += 1
        try:
            for _ in range(limits.max_queries):
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), limits.idle_timeout)
                    data = await asyncio.wait_for(reader.readexactly(LENGTH.unpack(head)[0]), limits.read_deadline)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                if writer in self.tcp_open:  # now the most recently active
                    del self.tcp_open[writer]
                    self.tcp_open[writer] = None
                try:
                    response = self.responder.respond(data, client, False)
                except Exception:
                    self.internal_error()
                    break
                if response is None:
                    continue
                writer.write(LENGTH.pack(len(response)) + response)
                try:
                    await asyncio.wait_for(writer.drain(), limits.read_deadline)
                except (asyncio.TimeoutError, ConnectionError):
                    break
        finally:
            self.tcp_open.pop(writer, None)
            self.tcp_clients[client] -= 1
            if self.tcp_clients[client] <= 0:
                del self.tcp_clients[client]
            writer.close()

    def rate_limiter(self, config: Config) -> RateLimiter | None:
        if not config.rrl.enabled:
            return None
        settings = config.rrl
        rates = {key: getattr(settings, key) for key in ("responses_per_second", "nxdomains_per_second", "errors_per_second")}
        return RateLimiter(replace(settings, **{k: v * self.share for k, v in rates.items() if v is not None}))

    def _close_in_child(self) -> None:
        for listener in self.listeners:
            listener.udp.close()
            listener.tcp.close()

    def prepare(self, config: Config) -> tuple[State, LoadResult]:
        if self.feed is not None:
            result = self.feed.load(self.zones)  # the supervisor reported what is wrong
        else:
            result = self.load_zones(config)
            report(result, quiet=not self.announces)
        running = getattr(self, "responder", None)  # none before the first load
        return state_for(config, result, self.health.is_up, running.state if running is not None else None), result

    def apply(self, config: Config, state: State, result: LoadResult, first: bool) -> None:
        if first:
            self.responder = Responder(state, query_log=config.query_log_sample, rrl=self.rate_limiter(config),
                                       counting=config.metrics is not None)
            self.health.on_change.append(self.responder.health_changed)
            return
        old = self.responder.state
        log.debug("caches of the replaced data: %s", old.cache_sizes())
        if config.rrl != self.config.rrl:
            self.responder.rrl = self.rate_limiter(config)
        self.responder.query_log = config.query_log_sample
        self.responder.counting = config.metrics is not None
        self.responder.state = state  # the one swap: each query takes the state once, old or new, never a mix
        asyncio.get_running_loop().call_later(CLOSE_DELAY, old.classifier.close)

    def loaded(self, result: LoadResult, reason: str | None) -> None:
        log_loaded(result, reason, logging.INFO if self.announces else logging.DEBUG)

    async def serve(self) -> None:
        before_load = signature(watched_files(self.config))
        await self.start()
        tasks = []
        if self.feed is None:
            on_signals(self.stopping, lambda: self.reload("SIGHUP", reparse=True))
            tasks.append(asyncio.ensure_future(watch(lambda: watched_files(self.config),
                                                     lambda: self.reload("files changed"), self.stopping,
                                                     seen=before_load,
                                                     directories=lambda: watched_directories(self.config))))
            tasks.append(asyncio.ensure_future(self.resign()))
        else:  # the supervisor reloads and signs, and sends us the result
            on_signals(self.stopping, None)
            self.feed.start(asyncio.get_running_loop())
            tasks.append(asyncio.ensure_future(self.follow_feed(self.feed)))
        self.ready()
        await self.stopping.wait()
        for task in tasks:
            task.cancel()
        self.health.stop()
        if self.metrics is not None:
            self.metrics.close()
        for server in self.tcp_servers:
            server.close()
        for listener in self.listeners:
            listener.udp.close()
        if self.loader is not None:
            self.loader.close()

    async def follow_feed(self, feed: SupervisorFeed) -> None:
        while True:
            frames = await feed.updates.get()
            if frames is None:
                return  # the supervisor is gone: the health pipe says so too, and we stop
            feed.pending = frames
            await self.reload(feed.reason_of(frames))


def on_signals(stopping: asyncio.Event, reload: Callable[[], Coroutine[Any, Any, None]] | None) -> None:
    """SIGTERM and SIGINT stop; SIGHUP reloads (ignored without `reload`)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if reload is None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))


def event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    try:
        import uvloop  # cheaper per event than the stock loop

        return uvloop.run
    except ImportError:  # pragma: no cover
        return asyncio.run
