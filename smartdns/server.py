"""UDP and TCP listeners, reloads and the process lifecycle.

One asyncio loop (uvloop when installed) serves UDP datagrams, TCP connections
(RFC 7766: 2-byte framing, several queries per connection, idle timeout,
limits) and the background work. Nothing a client sends may stop the loop:
every handler catches what it raises.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import struct
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from .catalog import Catalog
from .config import Config, ConfigError, ListenAddress, load_config
from .geo import Classifier, GeoDatabaseError
from .health import HealthMonitor
from .policy import DynamicRRset
from .reload import LoadResult, load_all, signature, watched_files
from .responder import Responder, State
from .zonefile import CONTINENT_OF, ZoneData

log = logging.getLogger("smartdns")

WATCH_INTERVAL = 1.0  # seconds between looks at the files
LENGTH = struct.Struct("!H")


def report(result: LoadResult) -> None:
    for problem in result.problems:
        log.error("zone error: %s", problem)
    for warning in result.warnings:
        log.warning("zone warning: %s", warning)
    for path in result.kept:
        log.error("zone %s: serving its last good version", path)


def build_state(config: Config, previous: dict[str, ZoneData] | None = None) -> tuple[State, LoadResult]:
    result = load_all(config, previous)
    report(result)
    classifier = Classifier(config.geodb, CONTINENT_OF)
    return State(Catalog(result.zones), classifier), result


def dynamic_records(zones: dict[str, ZoneData]) -> list[DynamicRRset]:
    return [source for zone in zones.values() for node in zone.nodes.values()
            for source in node.values() if isinstance(source, DynamicRRset)]


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            response = self.server.responder.respond(data, addr[0], True)
        except Exception:  # a bug must cost one answer, never the server
            self.server.internal_error()
            return
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors from earlier sends: nothing to do
        pass


class Server:
    def __init__(self, config: Config, overrides: dict[str, Any] | None = None) -> None:
        self.config = config
        self.overrides = overrides or {}  # command-line flags: they stay in force over the file on reload
        self.responder: Responder
        self.zones: dict[str, ZoneData] = {}
        self.stopping: asyncio.Event
        self.bound: list[ListenAddress] = []
        self.tcp_clients: Counter[str] = Counter()
        self.tcp_total = 0
        self.errors_logged = 0.0
        self.transports: list[Any] = []
        self.tcp_servers: list[asyncio.base_events.Server] = []

    def internal_error(self) -> None:
        now = time.monotonic()
        if now - self.errors_logged > 10:  # at most one traceback every 10 s
            self.errors_logged = now
            log.exception("internal error answering a query")

    async def start(self) -> None:
        self.stopping = asyncio.Event()
        state, result = build_state(self.config)
        self.zones = dict(result.zones)
        self.health = HealthMonitor(self.config.health)
        self.responder = Responder(state, ecs=self.config.ecs, is_up=self.health.is_up)
        self.health.follow(dynamic_records(self.zones))
        log.info("loaded %d zones (%d records)", len(result.zones), sum(z.record_count for z in result.zones.values()))
        for address in self.config.listen:
            await self._listen(address)
        log.info("listening on %s (udp+tcp)", ", ".join(str(a) for a in self.bound))

    async def _listen(self, address: ListenAddress) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        for attempt in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((address.host, address.port))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((address.host, port))
            except OSError:
                udp.close()
                tcp.close()
                if address.port or attempt == 19:
                    raise
                continue  # an ephemeral UDP port whose TCP twin is taken: try another
            break
        transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(self), sock=udp)
        tcp.listen(256)
        tcp.setblocking(False)
        server = await asyncio.start_server(self._tcp_client, sock=tcp)
        self.transports.append(transport)
        self.tcp_servers.append(server)
        self.bound.append(ListenAddress(address.host, port))

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        limits = self.config.tcp
        peer = writer.get_extra_info("peername") or ("?", 0)
        client = peer[0]
        if self.tcp_total >= limits.max_connections or self.tcp_clients[client] >= limits.max_per_client:
            writer.close()
            return
        self.tcp_total += 1
        self.tcp_clients[client] += 1
        try:
            for _ in range(limits.max_queries):
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), limits.idle_timeout)
                    data = await asyncio.wait_for(reader.readexactly(LENGTH.unpack(head)[0]), limits.read_deadline)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
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
            self.tcp_total -= 1
            self.tcp_clients[client] -= 1
            if self.tcp_clients[client] <= 0:
                del self.tcp_clients[client]
            writer.close()

    async def reload(self, reason: str) -> None:
        """Re-read config, zones and GeoIP files off the query path; swap in one step."""
        config = self.config
        if config.source:
            try:
                config = load_config(config.source, **self.overrides)
            except ConfigError as exc:
                log.error("config error, keeping the running config: %s", exc)
                config = self.config
            if config.listen != self.config.listen:
                log.warning("listen addresses changed in the config: restart smartdns to apply them")
                config = replace(config, listen=self.config.listen)
        try:
            state, result = await asyncio.to_thread(build_state, config, self.zones)
        except GeoDatabaseError as exc:
            log.error("reload (%s) failed, keeping the running data: %s", reason, exc)
            return
        old = self.responder.state
        self.config = config
        self.zones = dict(result.zones)
        self.responder.ecs = config.ecs
        self.responder.state = state  # the one swap: queries see old or new data, never a mix
        self.health.follow(dynamic_records(self.zones), config.health)
        old.classifier.close()
        log.info("reloaded (%s): %d zones, %d problems", reason, len(result.zones), len(result.problems))

    async def watch(self) -> None:
        """Reload when watched files change and have stopped changing (a write in progress is waited out)."""
        seen = signature(watched_files(self.config))
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), WATCH_INTERVAL)
                return
            except asyncio.TimeoutError:
                pass
            now = signature(watched_files(self.config))
            if now == seen:
                continue
            await asyncio.sleep(WATCH_INTERVAL / 2)
            settled = signature(watched_files(self.config))
            if settled != now:
                continue  # still being written: look again next round
            seen = settled
            await self.reload("files changed")

    async def serve_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP")))
        watcher = asyncio.ensure_future(self.watch())
        await self.stopping.wait()
        log.info("stopping")
        watcher.cancel()
        self.health.stop()
        for transport in self.transports:
            transport.close()
        for server in self.tcp_servers:
            server.close()
        log.info("stopped")


def run(config: Config, overrides: dict[str, Any] | None = None) -> None:
    server = Server(config, overrides)
    try:
        import uvloop  # the stock loop costs several times more per datagram
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    runner(server.serve_forever())
