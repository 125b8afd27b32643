"""Process layout: one process, or a supervisor with N workers on one port (SO_REUSEPORT).

The sockets are bound first (as root if port 53 needs it), everything the
processes will ever import is imported, then privileges are dropped, then the
work starts. With `workers: 1` that one process does everything. With more, the
supervisor binds one socket set per worker and forks the workers (a fork needs
no file access, so a worker can be started again after privileges are gone).
The supervisor probes health itself, once per target however many workers,
and writes every change of what is down into each worker's pipe; each worker
writes "ready" and then its counters every second into another. A worker whose
supervisor goes away sees its pipe close (each worker closes its copies of
the others' pipes) and exits; a worker that dies is forked again on the same
sockets.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from .config import Config
from .health import HealthMonitor, HealthView, decode_down, encode_down
from .loader import Broadcaster, LoaderProcess, SupervisorFeed
from .logs import tag_worker
from .metrics import MetricsServer, ServerStatus, Stats, combined
from .privileges import drop_privileges, warn_if_root
from .reload import LoadResult, LoadSequence, report, signature, watch, watched_directories, watched_files
from .server import Listener, Server, bind_listeners, event_loop_runner, on_signals

log = logging.getLogger("smartdns")

RESTART_DELAY = 1.0  # seconds before a dead worker is started again
STATS_INTERVAL = 1.0  # seconds between a worker's counter snapshots to the supervisor
STOP_TIMEOUT = 10.0
# Imported lazily by the standard library or by us; after dropping privileges the
# interpreter's files may be out of reach (a Python under /root, say), so load them first.
PRELOAD = ("concurrent.futures.thread", "asyncio.base_subprocess", "ssl", "uvloop", "dns.rdtypes.ANY.TXT",
           "dns.rdtypes.IN.A", "dns.rdtypes.IN.AAAA", "encodings.idna", "smartdns.geodb")


def worker_count(config: Config) -> int:
    return config.workers or os.cpu_count() or 1


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import dns.rdtypes.ANY
    import dns.rdtypes.IN

    for package in (dns.rdtypes.ANY, dns.rdtypes.IN):  # dnspython imports rdata classes on first use
        for name in package.__all__:
            importlib.import_module(f"{package.__name__}.{name}")


def run(config: Config, overrides: dict[str, Any] | None = None, user: str | None = None) -> None:
    """Bind, drop privileges, serve until SIGTERM/SIGINT."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is in place
    raise_file_limit()
    count = worker_count(config)
    sets = bind_listeners(config.listen, count)
    preload()
    if user:
        drop_privileges(user)
    else:
        warn_if_root()
    if count == 1:
        ready = lambda: announce(sets[0], count)  # noqa: E731
        event_loop_runner()(Server(config, sets[0], HealthMonitor(config.health), overrides, ready).serve())
    else:
        # The stock loop here: this process forks, and a child must be able to start a fresh loop.
        asyncio.run(Supervisor(config, sets, overrides or {}).run())
    log.info("stopped")


def raise_file_limit() -> None:
    """Every TCP connection is a file descriptor: take all the system allows us (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def announce(listeners: list[Listener], count: int) -> None:
    """The line operators and tests wait for: every listener is answering from loaded data."""
    log.info("listening on %s (udp+tcp)%s", ", ".join(str(listener.address) for listener in listeners),
             f", {count} workers" if count > 1 else "")


@dataclass
class Worker:
    pid: int
    to_worker: BinaryIO  # what is down, a line per change
    ready: threading.Event
    snapshot: dict[str, Any] | None = None  # its latest counters


class Supervisor(LoadSequence[None]):
    """Its own copy of the zones only tells it what to probe (the last good version of every zone, as
    the workers keep: a broken edit must not stop a zone's health checks); workers load and reload
    themselves."""

    def __init__(self, config: Config, sets: list[list[Listener]], overrides: dict[str, Any]) -> None:
        self.health: HealthMonitor
        super().__init__(config, overrides, ServerStatus(), HealthMonitor(config.health))
        self.sets = sets
        self.workers: list[Worker | None] = [None] * len(sets)
        self.retired = Stats()  # counters of workers that exited, so that totals never go back
        self.metrics = MetricsServer(self.total_stats, self.current_status)
        self.stopping = asyncio.Event()
        self.broadcaster = Broadcaster()
        self.reason = ""  # of the reload under way

    def total_stats(self) -> Stats:
        return combined(self.retired, *[w.snapshot for w in self.workers if w is not None and w.snapshot])

    def current_status(self) -> ServerStatus:
        self.status.follow_health(self.health.states.items())
        self.status.ready = self.status.zones > 0 and all(w is not None and w.ready.is_set() for w in self.workers)
        return self.status

    def start_worker(self, index: int) -> None:
        down_read, down_write = os.pipe()
        up_read, up_write = os.pipe()
        updates_read, updates_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's frames
            code = 1
            try:
                os.close(down_write)
                os.close(up_read)
                os.close(updates_write)
                self.broadcaster.close_in_child()
                if self.loader is not None:
                    self.loader.sock.close()
                # nothing of the supervisor's stays open here: its pipes to the other workers (or they
                # would not see it go), its metrics listener
                for other_worker in self.workers:
                    if other_worker is not None:
                        other_worker.to_worker.close()
                self.metrics.close_in_child()
                for other, listeners in enumerate(self.sets):
                    if other != index:
                        for listener in listeners:
                            listener.udp.close()
                            listener.tcp.close()
                tag_worker(index)  # every line this process logs from now on says which worker
                # worker 0 speaks for all of them about loads, reloads and zone errors (each loads and signs
                # the same files); the others log those at debug level, the supervisor not at all
                code = _worker_process(self.config, self.overrides, self.sets[index], down_read, up_write,
                                       SupervisorFeed(self.zones, updates_read), announces=index == 0)
            except BaseException:  # whatever happens, the child must not run on as a supervisor
                log.exception("worker %d failed", index)
            finally:
                os._exit(code)
        os.close(down_read)
        os.close(up_write)
        os.close(updates_read)
        self.broadcaster.add(pid, updates_write)
        worker = Worker(pid, os.fdopen(down_write, "wb", buffering=0), threading.Event())
        self.workers[index] = worker
        self._send(worker, encode_down(self.health.down))
        threading.Thread(target=self._read_worker, args=(worker, up_read), daemon=True).start()

    @staticmethod
    def _read_worker(worker: Worker, fd: int) -> None:
        """A thread per worker: it says "ready" once, then "stats {...}" every second."""
        with os.fdopen(fd, "r") as lines:
            for line in lines:
                if line.startswith("stats "):
                    worker.snapshot = json.loads(line[6:])
                elif line.strip() == "ready":
                    worker.ready.set()

    @staticmethod
    def _send(worker: Worker, line: str) -> None:
        try:
            worker.to_worker.write(line.encode() + b"\n")
        except OSError:
            pass  # the worker died: it is started again with the full state

    def broadcast(self) -> None:
        line = encode_down(self.health.down)
        for worker in self.workers:
            if worker is not None:
                self._send(worker, line)

    def prepare(self, config: Config) -> tuple[None, LoadResult]:
        result = self.load_zones(config)
        report(result)  # once, here: the workers say nothing of it
        return None, result

    async def reload(self, reason: str, sign_at: float | None = None, reparse: bool = False) -> None:
        self.reason = reason
        await super().reload(reason, sign_at, reparse)

    def apply(self, config: Config, prepared: None, result: LoadResult, first: bool) -> None:
        if not first:  # the workers have `self.zones`: what changed goes to each
            self.broadcaster.send(result.zones, self.zones, result, self.reason)

    def _close_sockets(self) -> None:
        for listeners in self.sets:
            for listener in listeners:
                listener.udp.close()
                listener.tcp.close()

    async def run(self) -> None:
        # Reloads run in a child forked now, before any thread. The first load runs here, before the
        # workers fork: they inherit its data (its leftovers given back to the system first).
        self.loader = LoaderProcess(self._close_sockets)
        self.health.on_change.append(self.broadcast)
        if self.config.metrics is not None:
            await self.metrics.start(self.config.metrics.host, self.config.metrics.port)
        before_load = signature(watched_files(self.config))
        await self.load()
        for index in range(len(self.sets)):
            self.start_worker(index)
        for worker in self.workers:  # each says "ready" once it answers from loaded data
            assert worker is not None
            await asyncio.to_thread(worker.ready.wait, 60)
        on_signals(self.stopping, self.forward_sighup)  # before the announcement: a SIGHUP right after it counts
        announce(self.sets[0], len(self.sets))
        # the edits made while the workers started count too: this process speaks for their reloads
        watcher = asyncio.ensure_future(watch(lambda: watched_files(self.config), lambda: self.reload("files changed"),
                                              self.stopping, seen=before_load,
                                              directories=lambda: watched_directories(self.config)))
        resigner = asyncio.ensure_future(self.resign())  # the workers get the signed zones from us
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), RESTART_DELAY)
            except asyncio.TimeoutError:
                pass
            for index, worker in enumerate(self.workers):
                if worker is None or self.stopping.is_set():
                    continue
                status = _exited(worker.pid)
                if status is not None:
                    log.error("worker %d exited with %s: starting it again", index, status)
                    if worker.snapshot:
                        self.retired.add(worker.snapshot)
                    worker.to_worker.close()
                    self.broadcaster.remove(worker.pid)
                    self.start_worker(index)
        watcher.cancel()
        resigner.cancel()
        self.health.stop()
        self.metrics.close()
        await self.stop_workers()
        if self.loader is not None:
            self.loader.close()

    async def forward_sighup(self) -> None:
        await self.reload("SIGHUP", reparse=True)  # the workers get what changed from us

    async def stop_workers(self) -> None:
        for worker in self.workers:
            if worker is not None:
                _signal(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            if worker is None:
                continue
            while _exited(worker.pid) is None:
                if time.monotonic() > deadline:
                    _signal(worker.pid, signal.SIGKILL)
                await asyncio.sleep(0.05)


def _exited(pid: int) -> int | None:
    """The exit status (negative: the signal) once `pid` has exited, else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    if done == 0:
        return None
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _worker_process(config: Config, overrides: dict[str, Any], listeners: list[Listener], down_fd: int,
                    up_fd: int, feed: SupervisorFeed, announces: bool = True) -> int:
    """Runs in the forked child: its own loop, the supervisor's data and health."""
    signal.set_wakeup_fd(-1)  # the supervisor's loop owned it
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is in place
    up = os.fdopen(up_fd, "w", buffering=1)
    view = HealthView()
    server = Server(config, listeners, view, overrides, lambda: print("ready", file=up, flush=True), metrics=False,
                    share=1 / worker_count(config), announces=announces, feed=feed)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(down_fd, "rb"))

        async def follow_supervisor() -> None:
            while True:
                line = await reader.readline()
                if not line:
                    server.stopping.set()  # the supervisor is gone: so are we
                    return
                view.set_down(decode_down(line.decode()))

        async def send_stats() -> None:
            while True:
                await asyncio.sleep(STATS_INTERVAL)
                responder = getattr(server, "responder", None)  # none until the zones have loaded
                if responder is not None:
                    print("stats " + json.dumps(responder.stats.snapshot()), file=up, flush=True)

        tasks = [asyncio.ensure_future(follow_supervisor()), asyncio.ensure_future(send_stats())]
        await server.serve()
        for task in tasks:
            task.cancel()

    event_loop_runner()(main())
    return 0
