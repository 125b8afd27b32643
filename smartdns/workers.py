"""Process layout: one process, or a supervisor with N workers on one port (SO_REUSEPORT).

The sockets are bound first (as root if port 53 needs it), then privileges are
dropped, then the work starts. With `workers: 1` that one process does
everything. With more, the supervisor binds one socket set per worker, starts
each worker as `python -m smartdns.workers` with its sockets passed as file
descriptors, probes health itself (once per target, however many workers) and
sends every change of what is down down each worker's stdin. A worker whose
supervisor goes away sees its stdin close and exits; a worker that dies is
started again on the same sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from .config import Config, ListenAddress, load_config
from .health import HealthMonitor, HealthView, decode_down, encode_down
from .metrics import MetricsServer, ServerStatus, Stats, combined
from .privileges import drop_privileges, warn_if_root
from .reload import load_all, watch, watched_files
from .server import Listener, Server, bind_listeners, dynamic_records, event_loop_runner, on_signals, reload_config

log = logging.getLogger("smartdns")

RESTART_DELAY = 1.0  # seconds before a dead worker is started again
STATS_INTERVAL = 1.0  # seconds between a worker's counter snapshots to the supervisor


def worker_count(config: Config) -> int:
    return config.workers or os.cpu_count() or 1


def run(config: Config, overrides: dict[str, Any] | None = None, user: str | None = None,
        log_settings: tuple[str, str] = ("plain", "INFO")) -> None:
    """Bind, drop privileges, serve until SIGTERM/SIGINT."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is in place
    count = worker_count(config)
    sets = bind_listeners(config.listen, count)
    if user:
        drop_privileges(user)
    else:
        warn_if_root()
    if count == 1:
        ready = lambda: announce(sets[0], count)  # noqa: E731
        event_loop_runner()(Server(config, sets[0], HealthMonitor(config.health), overrides, ready).serve())
    else:
        event_loop_runner()(Supervisor(config, sets, overrides or {}, log_settings).run())
    log.info("stopped")


def announce(listeners: list[Listener], count: int) -> None:
    """The line operators and tests wait for: every listener is answering from loaded data."""
    log.info("listening on %s (udp+tcp)%s", ", ".join(str(l.address) for l in listeners),
             f", {count} workers" if count > 1 else "")


class Supervisor:
    def __init__(self, config: Config, sets: list[list[Listener]], overrides: dict[str, Any],
                 log_settings: tuple[str, str] = ("plain", "INFO")) -> None:
        self.config = config
        self.log_settings = log_settings
        self.sets = sets
        self.overrides = overrides
        self.health = HealthMonitor(config.health)
        self.workers: list[subprocess.Popen | None] = [None] * len(sets)
        self.ready = [threading.Event() for _ in sets]
        self.snapshots: list[dict[str, Any] | None] = [None] * len(sets)  # each worker's latest counters
        self.retired = Stats()  # counters of workers that exited, so that totals never go back
        self.status = ServerStatus()
        self.metrics = MetricsServer(self.total_stats, self.current_status)
        self.stopping = asyncio.Event()

    def total_stats(self) -> Stats:
        return combined(self.retired, *[s for s in self.snapshots if s is not None])

    def current_status(self) -> ServerStatus:
        self.status.follow_health(self.health.states.items())
        self.status.ready = self.status.zones > 0 and all(e.is_set() for e in self.ready)
        return self.status

    def _read_worker(self, index: int, proc: subprocess.Popen) -> None:
        """A thread per worker: its stdout says "ready" once, then "stats {...}" every second."""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("stats "):
                self.snapshots[index] = json.loads(line[6:])
            elif line.strip() == "ready":
                self.ready[index].set()

    def spec(self, index: int) -> str:
        return json.dumps({
            "config": self.config.source,
            "overrides": self.overrides,  # command-line flags, as parsed: plain JSON values
            "listeners": [[l.address.host, l.address.port, l.udp.fileno(), l.tcp.fileno()] for l in self.sets[index]],
            "index": index,
            "log": self.log_settings,
        })

    def start_worker(self, index: int) -> None:
        fds = [fd for l in self.sets[index] for fd in (l.udp.fileno(), l.tcp.fileno())]
        proc = subprocess.Popen([sys.executable, "-m", "smartdns.workers"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, pass_fds=fds, text=True)
        assert proc.stdin is not None
        proc.stdin.write(self.spec(index) + "\n" + encode_down(self.health.down) + "\n")
        proc.stdin.flush()
        self.workers[index] = proc
        threading.Thread(target=self._read_worker, args=(index, proc), daemon=True).start()

    def broadcast(self) -> None:
        line = encode_down(self.health.down) + "\n"
        for proc in self.workers:
            if proc is not None and proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write(line)
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass  # the worker died: it is restarted with the full state

    async def reload(self, reason: str) -> None:
        """The supervisor's own copy of the zones only tells it what to probe; workers reload themselves."""
        self.config = reload_config(self.config, self.overrides)
        result = await asyncio.to_thread(load_all, self.config)
        self.status.loaded(len(result.zones), sum(z.record_count for z in result.zones.values()),
                           not result.problems, reload=True)
        self.health.follow(dynamic_records(dict(result.zones)), self.config.health)

    async def run(self) -> None:
        self.health.on_change.append(self.broadcast)
        if self.config.metrics is not None:
            await self.metrics.start(self.config.metrics.host, self.config.metrics.port)
        result = await asyncio.to_thread(load_all, self.config)
        self.status.loaded(len(result.zones), sum(z.record_count for z in result.zones.values()),
                           not result.problems, reload=False)
        for index in range(len(self.sets)):
            self.start_worker(index)
        for ready in self.ready:  # each says "ready" once it answers from loaded data
            await asyncio.to_thread(ready.wait, 60)
        announce(self.sets[0], len(self.sets))
        self.health.follow(dynamic_records(dict(result.zones)))
        on_signals(self.stopping, self.forward_sighup)
        watcher = asyncio.ensure_future(watch(lambda: watched_files(self.config), lambda: self.reload("files changed"),
                                              self.stopping))
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), RESTART_DELAY)
            except asyncio.TimeoutError:
                pass
            for index, proc in enumerate(self.workers):
                if proc is not None and proc.poll() is not None and not self.stopping.is_set():
                    log.error("worker %d exited with %s: starting it again", index, proc.returncode)
                    if self.snapshots[index] is not None:
                        self.retired.add(self.snapshots[index])
                        self.snapshots[index] = None
                    self.ready[index].clear()
                    self.start_worker(index)
        watcher.cancel()
        self.health.stop()
        self.metrics.close()
        await self.stop_workers()

    async def forward_sighup(self) -> None:
        for proc in self.workers:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGHUP)  # each worker reloads now
        await self.reload("SIGHUP")

    async def stop_workers(self) -> None:
        for proc in self.workers:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            if proc is not None:
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def _worker() -> None:
    import socket

    from .cli import setup_logging

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    spec = json.loads(await reader.readline())
    setup_logging(*spec["log"])
    overrides = {k: v for k, v in spec["overrides"].items() if v is not None}
    config = load_config(spec["config"], **overrides)
    listeners = []
    for host, port, udp_fd, tcp_fd in spec["listeners"]:
        listeners.append(Listener(ListenAddress(host, port), socket.socket(fileno=udp_fd), socket.socket(fileno=tcp_fd)))
    view = HealthView()

    def ready() -> None:
        print("ready", flush=True)  # to the supervisor, on our stdout pipe

    server = Server(config, listeners, view, overrides, ready, metrics=False)

    async def send_stats() -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            responder = getattr(server, "responder", None)  # none until the zones have loaded
            if responder is not None:
                print("stats " + json.dumps(responder.stats.snapshot()), flush=True)

    sender = asyncio.ensure_future(send_stats())

    async def follow_supervisor() -> None:
        while True:
            line = await reader.readline()
            if not line:
                server.stopping.set()  # the supervisor is gone: so are we
                return
            view.set_down(decode_down(line.decode()))

    follower = asyncio.ensure_future(follow_supervisor())
    await server.serve()
    follower.cancel()
    sender.cancel()


def worker_main() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the reload handler is in place
    try:
        event_loop_runner()(_worker())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    worker_main()
