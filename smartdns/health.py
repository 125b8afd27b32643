"""Active health checks of pool values: TCP connect, HTTP(S) status, SMTP greeting.

Only values with `status: obey` in records that carry a health check
(`octodns.healthcheck`, or ours under `octodns.smartdns.healthcheck`) are
probed. A target counts as up until its first check completes; `rise`
successes in a row bring it up, `fall` failures take it down, so one lost probe
does not flap the answer. Checks run as tasks on the server's loop and never
block query handling; each target is probed once however many records use it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from .config import HealthSettings
from .model import DynamicRRset, HealthCheck, PoolValue

log = logging.getLogger("smartdns.health")

MAX_GREETING_LINES = 50  # a 220- greeting longer than this is not a mail server we want


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    check: HealthCheck

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.check.protocol} {host}:{self.check.port}"


@dataclass(slots=True)
class TargetState:
    up: bool = True  # until the first check completes
    checked: bool = False
    streak: int = 0  # consecutive results disagreeing with `up`
    changed_at: float = 0.0
    reason: str = "not checked yet"


def targets_of(records: Iterable[DynamicRRset]) -> set[Target]:
    """Every (address, check) that some record asks to follow."""
    out: set[Target] = set()
    for record in records:
        if record.healthcheck is None:
            continue
        values: list[PoolValue] = list(record.values)
        for pool in record.pools.values():
            values.extend(pool.values)
        out.update(Target(v.text, record.healthcheck) for v in values if v.status == "obey")
    return out


async def probe(target: Target, timeout: float) -> tuple[bool, str]:
    """One check: (up, reason)."""
    check = target.check
    try:
        return await asyncio.wait_for(_PROBES[check.protocol](target), timeout)
    except asyncio.TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError) as exc:
        return False, f"{type(exc).__name__}: {exc}".rstrip(": ")


async def _connect(target: Target, tls: bool = False) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = None
    if tls:
        # Like hosted providers' checks: the certificate is the site's business, reachability is ours.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection(target.address, target.check.port, ssl=context,
                                         server_hostname=target.check.host if tls else None)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (OSError, ssl.SSLError):
        pass


async def _tcp(target: Target) -> tuple[bool, str]:
    _, writer = await _connect(target)
    await _close(writer)
    return True, "connected"


async def _http(target: Target, tls: bool = False) -> tuple[bool, str]:
    check = target.check
    reader, writer = await _connect(target, tls)
    try:
        request = f"GET {check.path} HTTP/1.1\r\nHost: {check.host}\r\nUser-Agent: smartdns-health\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status = (await reader.readline()).decode("latin-1").split()
    finally:
        await _close(writer)
    if len(status) < 2 or not status[0].startswith("HTTP/") or not status[1].isdigit():
        return False, "not an HTTP response"
    code = int(status[1])
    return 200 <= code < 400, f"HTTP {code}"


async def _https(target: Target) -> tuple[bool, str]:
    return await _http(target, tls=True)


async def _smtp(target: Target) -> tuple[bool, str]:
    """A mail server is up when it greets with 220 (multi-line `220-` included); 421 and the rest are down."""
    reader, writer = await _connect(target)
    try:
        for _ in range(MAX_GREETING_LINES):
            line = (await reader.readline()).decode("latin-1").rstrip("\r\n")
            if not line:
                return False, "connection closed before the greeting"
            code, sep = line[:3], line[3:4]
            if code != "220":
                return False, f"greeting {line[:60]!r}"
            if sep != "-":  # "220 " or a bare "220" ends the greeting
                writer.write(b"QUIT\r\n")
                await writer.drain()
                return True, "220 greeting"
        return False, "greeting too long"
    finally:
        await _close(writer)


_PROBES = {"TCP": _tcp, "HTTP": _http, "HTTPS": _https, "SMTP": _smtp}


class HealthView:
    """The up/down answers the policy asks for, from the set of targets known to be down.

    Worker processes hold only a view, fed by the process that probes, so each
    target is probed once however many workers serve.
    """

    def __init__(self) -> None:
        self.down: frozenset[Target] = frozenset()
        self.on_change: list[Callable[[], None]] = []

    def is_up(self, record: DynamicRRset, value: PoolValue) -> bool:
        if value.status != "obey":
            return value.status == "up"
        check = record.healthcheck
        return check is None or not self.down or Target(value.text, check) not in self.down

    def set_down(self, down: frozenset[Target]) -> None:
        if down != self.down:
            self.down = down
            for callback in self.on_change:
                callback()

    def follow(self, records: Iterable[DynamicRRset], settings: HealthSettings | None = None) -> None:
        """Nothing to probe here: the supervisor does it."""

    def stop(self) -> None:
        pass


def encode_down(down: Iterable[Target]) -> str:
    """One line for the supervisor -> worker pipe."""
    return json.dumps(sorted([t.address, t.check.protocol, t.check.port, t.check.path, t.check.host] for t in down))


def decode_down(line: str) -> frozenset[Target]:
    return frozenset(Target(a, HealthCheck(p, port, path, host)) for a, p, port, path, host in json.loads(line))


class HealthMonitor(HealthView):
    """Keeps one probing task per target, and the view of what is down."""

    def __init__(self, settings: HealthSettings,
                 prober: Callable[[Target, float], Awaitable[tuple[bool, str]]] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.prober = prober or probe  # another service (smartdns route) brings its own kind of probe
        self.states: dict[Target, TargetState] = {}
        self.tasks: dict[Target, asyncio.Task[None]] = {}

    def follow(self, records: Iterable[DynamicRRset], settings: HealthSettings | None = None) -> None:
        """Probe exactly these records' targets from now on (called at start and on every reload)."""
        if settings is not None and settings != self.settings:
            self.settings = settings
            self.stop()  # restart every loop with the new timing; states are kept
        self.follow_targets(targets_of(records))

    def follow_targets(self, wanted: set[Target]) -> None:
        """Probe exactly these targets from now on."""
        for target in set(self.states) - wanted:  # states, not tasks: stop() above may have emptied those
            task = self.tasks.pop(target, None)
            if task is not None:
                task.cancel()
            self.states.pop(target, None)
        self._publish()
        for target in wanted - set(self.tasks):
            self.states.setdefault(target, TargetState())
            self.tasks[target] = asyncio.ensure_future(self._run(target))

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    async def _run(self, target: Target) -> None:
        settings = self.settings
        while True:
            started = time.monotonic()
            try:
                up, reason = await self.prober(target, settings.timeout)
            except Exception as exc:  # a probe that fails oddly is a failed probe, not the end of checking
                log.exception("health: probing %s", target)
                up, reason = False, f"{type(exc).__name__}: {exc}"
            log.debug("health: %s probed: %s (%s)", target, "up" if up else "down", reason)
            self._record(target, up, reason)
            await asyncio.sleep(max(0.0, settings.interval - (time.monotonic() - started)))

    def _record(self, target: Target, up: bool, reason: str) -> None:
        state = self.states.get(target)
        if state is None:
            return
        state.reason = reason
        if not state.checked:
            # The first result decides at once: a target starts up, and one already down
            # at start should not be answered for `fall` intervals.
            state.checked = True
            if not up:
                self._change(target, state, False, reason)
            return
        if up == state.up:
            state.streak = 0
            return
        state.streak += 1
        if state.streak >= (self.settings.rise if up else self.settings.fall):
            self._change(target, state, up, reason)

    def _change(self, target: Target, state: TargetState, up: bool, reason: str) -> None:
        state.up = up
        state.streak = 0
        state.changed_at = time.time()
        log.warning("health: %s is %s (%s)", target, "up" if up else "DOWN", reason)
        self._publish()

    def _publish(self) -> None:
        self.set_down(frozenset(t for t, s in self.states.items() if not s.up))
