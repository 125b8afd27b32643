"""Relay health, round-trip and choice.

Each relay is probed through the same secure settings Postfix will use: greeting, EHLO,
STARTTLS (or implicit TLS), the certificate checked against the relay's CA or fingerprint,
AUTH when the relay has credentials, QUIT. The rise/fall timing is the health checker's
(smartdns/health.py); the round-trip is the TCP connect time, smoothed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import time
from dataclasses import dataclass

from ..config import HealthSettings
from ..geo import Location
from ..health import HealthMonitor, Target, TargetState
from ..model import HealthCheck
from .settings import Relay

log = logging.getLogger("smartdns.route")

PROTOCOL = "SMTP-TLS"  # how relay targets show in health log lines
RTT_SMOOTHING = 0.3  # weight of the newest measurement
MAX_LINES = 100  # of one SMTP reply


class SmtpProbeError(Exception):
    pass


def target_of(relay: Relay) -> Target:
    return Target(relay.host, HealthCheck(PROTOCOL, relay.port, host=relay.name))


def tls_context(relay: Relay) -> ssl.SSLContext:
    """Verification as Postfix's `secure` (CA) or `fingerprint` level will do it."""
    if relay.ca_file is not None:
        context = ssl.create_default_context(cafile=str(relay.ca_file))
        context.check_hostname = True
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the fingerprint is compared after the handshake
    return context


async def _reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    lines: list[str] = []
    for _ in range(MAX_LINES):
        raw = await reader.readline()
        if not raw:
            raise SmtpProbeError("connection closed" + (f" after {lines[-1]!r}" if lines else ""))
        line = raw.decode("latin-1").rstrip("\r\n")
        lines.append(line[4:])
        if not line[:3].isdigit():
            raise SmtpProbeError(f"not SMTP: {line[:60]!r}")
        if line[3:4] != "-":
            return int(line[:3]), lines
    raise SmtpProbeError("reply too long")


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, want: int) -> list[str]:
    writer.write(line.encode() + b"\r\n")
    await writer.drain()
    code, text = await _reply(reader)
    if code != want:
        shown = line.split()[0] + (" ..." if line.startswith("AUTH") else line[len(line.split()[0]):])
        raise SmtpProbeError(f"{shown!r} answered {code} {' '.join(text)[:80]}")
    return text


async def probe_relay(relay: Relay, address: str) -> float:
    """One full probe; the TCP connect time in seconds. Raises on any failure."""
    loop = asyncio.get_running_loop()
    wrapper = relay.tls == "wrapper"
    context = tls_context(relay)
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(address, relay.port)
    rtt = time.perf_counter() - started
    try:
        if wrapper:
            await writer.start_tls(context, server_hostname=relay.host)
        code, text = await _reply(reader)
        if code != 220:
            raise SmtpProbeError(f"greeting {code} {' '.join(text)[:60]}")
        features = await _command(reader, writer, "EHLO smartdns-route-probe", 250)
        if not wrapper:
            if not any(f.upper().startswith("STARTTLS") for f in features):
                raise SmtpProbeError("no STARTTLS offered")
            await _command(reader, writer, "STARTTLS", 220)
            await writer.start_tls(context, server_hostname=relay.host)
            features = await _command(reader, writer, "EHLO smartdns-route-probe", 250)
        if relay.fingerprint is not None:
            sslobj = writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
            seen = hashlib.sha256(der or b"").hexdigest().upper()
            if ":".join(seen[i:i + 2] for i in range(0, 64, 2)) != relay.fingerprint:
                raise SmtpProbeError("certificate fingerprint does not match")
        if relay.username is not None:
            password = await loop.run_in_executor(None, relay.password)
            token = base64.b64encode(f"\0{relay.username}\0{password}".encode()).decode()
            await _command(reader, writer, f"AUTH PLAIN {token}", 235)
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
    return rtt


@dataclass(frozen=True, slots=True)
class RelayStatus:
    relay: Relay
    up: bool
    rtt: float | None  # seconds, smoothed; None before a successful probe
    reason: str


class RelayPool:
    """The relays, their health (rise/fall) and round-trips, and the choice for a destination."""

    def __init__(self, relays: tuple[Relay, ...], health: HealthSettings) -> None:
        self.relays = relays
        self.rtt: dict[str, float] = {}
        self.addresses: set[str] = {r.host for r in relays}  # names and the addresses they resolved to
        self.by_target = {target_of(r): r for r in relays}
        self.monitor = HealthMonitor(health, self.probe)

    def start(self) -> None:
        self.monitor.follow_targets(set(self.by_target))

    def stop(self) -> None:
        self.monitor.stop()

    async def probe_once(self) -> None:
        """Probe every relay now and take the result as its state (for a one-off command)."""
        timeout = self.monitor.settings.timeout
        results = await asyncio.gather(*(self.probe(t, timeout) for t in self.by_target))
        for target, (up, reason) in zip(self.by_target, results):
            self.monitor.states[target] = TargetState(up=up, checked=True, reason=reason)

    async def probe(self, target: Target, timeout: float) -> tuple[bool, str]:
        relay = self.by_target[target]
        try:
            infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(relay.host, relay.port), timeout)
            address = str(infos[0][4][0])
            self.addresses.add(address)
            rtt = await asyncio.wait_for(probe_relay(relay, address), timeout)
        except TimeoutError:
            return False, f"no answer within {timeout:g}s"
        except (OSError, ssl.SSLError, ssl.CertificateError, SmtpProbeError, asyncio.IncompleteReadError) as exc:
            return False, f"{type(exc).__name__}: {exc}".rstrip(": ")
        old = self.rtt.get(relay.name)
        self.rtt[relay.name] = rtt if old is None else old + RTT_SMOOTHING * (rtt - old)
        return True, f"TLS{' and AUTH' if relay.username else ''} ok, connect {rtt * 1000:.1f} ms"

    def status(self) -> list[RelayStatus]:
        out = []
        for target, relay in self.by_target.items():
            state = self.monitor.states.get(target)
            up = state.up if state is not None else True
            out.append(RelayStatus(relay, up, self.rtt.get(relay.name), state.reason if state else "not checked yet"))
        return out

    def choose(self, location: Location | None) -> tuple[Relay, bool, str] | None:
        """(relay, up, why) for a destination whose MX is at `location`; None with no relay configured."""
        if not self.relays:
            return None
        statuses = self.status()
        healthy = [s for s in statuses if s.up]
        pool = healthy or statuses
        serving = [s for s in pool if location is not None and any(location.matches(g) for g in s.relay.serves)]
        chosen = min(serving or pool, key=lambda s: s.rtt if s.rtt is not None else float("inf"))
        why = ("serves " + ",".join(g for g in chosen.relay.serves if location and location.matches(g))) if serving \
            else "no relay serves that location"
        rtt = f"{chosen.rtt * 1000:.1f} ms" if chosen.rtt is not None else "not measured"
        if not healthy:
            return chosen.relay, False, f"no relay is up; nearest configured ({why}, round-trip {rtt})"
        return chosen.relay, True, f"{why}; fastest of {len(serving or pool)} up (round-trip {rtt})"
