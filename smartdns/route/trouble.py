"""Troubled destinations: failures counted in a window, troubled for a cool-down, kept in a state file.

A destination is a recipient domain (`domain:example.org`) or the address block of one of its
MX hosts (`net:192.0.2.0/24`, `/48` for IPv6), so that every domain hosted by one troubled
provider benefits from what one of them taught. `failures` failures within `window` seconds
mark a destination troubled for `cooldown` seconds; after that the next message tries direct
again. The troubled set is written atomically (temporary file, fsync, rename) on every change,
so it survives a restart.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .settings import TroubleSettings

log = logging.getLogger("smartdns.route")

MAX_TRACKED = 50_000  # destinations with recent failures; the oldest are forgotten beyond this


def domain_key(domain: str) -> str:
    return f"domain:{domain}"


def block_key(address: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) around an address; None for text that is not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return f"net:{ipaddress.ip_network(f'{ip}/{prefix}', strict=False)}"


@dataclass(frozen=True, slots=True)
class Troubled:
    since: float  # unix time
    until: float
    reason: str  # the failure that tipped it


class TroubleBook:
    def __init__(self, settings: TroubleSettings, state_file: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.state_file = state_file
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}
        self.troubled: dict[str, Troubled] = {}
        self.on_troubled: list[Callable[[str, Troubled], None]] = []
        self.changes = 0  # trouble changes since start, for metrics
        if state_file is not None:
            self._load()

    def is_troubled(self, key: str) -> Troubled | None:
        entry = self.troubled.get(key)
        if entry is None:
            return None
        if entry.until <= self.clock():
            self._expire(key, entry)
            return None
        return entry

    def failure(self, key: str, reason: str) -> None:
        """One failed delivery (or connection) to a destination."""
        now = self.clock()
        if self.is_troubled(key):
            return  # already sent to relays; direct failures seen now are stragglers from before
        times = self.failures.get(key)
        if times is None:
            if len(self.failures) >= MAX_TRACKED:
                self.failures.pop(next(iter(self.failures)))
            times = self.failures[key] = deque(maxlen=self.settings.failures)
        times.append(now)
        while times and times[0] < now - self.settings.window:
            times.popleft()
        if len(times) >= self.settings.failures:
            del self.failures[key]
            entry = Troubled(now, now + self.settings.cooldown, reason)
            self.troubled[key] = entry
            self.changes += 1
            log.warning("route: %s is troubled for %gs after %d failures in %gs (last: %s)", key,
                        self.settings.cooldown, self.settings.failures, self.settings.window, reason)
            self._save()
            for callback in self.on_troubled:
                callback(key, entry)

    def expire_all(self) -> None:
        """Drop every cool-down that has ended (called periodically, so metrics and the file stay current)."""
        now = self.clock()
        for key, entry in list(self.troubled.items()):
            if entry.until <= now:
                self._expire(key, entry)

    def current(self) -> dict[str, Troubled]:
        self.expire_all()
        return dict(self.troubled)

    def _expire(self, key: str, entry: Troubled) -> None:
        if self.troubled.pop(key, None) is not None:
            self.changes += 1
            log.warning("route: %s cool-down over after %gs: trying direct again", key, entry.until - entry.since)
            self._save()

    def _load(self) -> None:
        assert self.state_file is not None
        try:
            data = json.loads(self.state_file.read_text())
            entries = data["troubled"]
            now = self.clock()
            for key, value in entries.items():
                entry = Troubled(float(value["since"]), float(value["until"]), str(value["reason"]))
                if entry.until > now:
                    self.troubled[str(key)] = entry
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("route: state file %s unreadable (%s): starting with no troubled destinations",
                      self.state_file, exc)
            return
        if self.troubled:
            log.info("route: %d troubled destination(s) restored from %s", len(self.troubled), self.state_file)

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {"version": 1, "troubled": {k: {"since": e.since, "until": e.until, "reason": e.reason}
                                           for k, e in sorted(self.troubled.items())}}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            with open(tmp, "w") as file:
                json.dump(data, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.error("route: cannot write state file %s: %s", self.state_file, exc)
