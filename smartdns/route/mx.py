"""MX lookups for the routing decision: cached with their TTL, never blocking Postfix.

`MxCache.get(domain, deadline)` answers from the cache (stale entries too, refreshed in the
background), else starts a lookup and waits at most `deadline` seconds for it; a lookup that
takes longer is finished in the background and the caller gets None (unknown) right away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ..config import ListenAddress

log = logging.getLogger("smartdns.route")

MIN_TTL, MAX_TTL = 30, 3600  # a cached answer is kept at least this, at most that (seconds)
NEGATIVE_TTL = 300  # a domain that does not exist
ERROR_TTL = 30  # a failed lookup is tried again this soon
MAX_HOSTS = 10  # MX hosts whose addresses are looked up
MAX_ENTRIES = 100_000  # domains cached; the whole cache is dropped when full
LOOKUP_LIFETIME = 8.0  # a background lookup gives up after this


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MxResult:
    """What a domain's mail goes to. `status`: ok, implicit (no MX: its A/AAAA), nullmx, nxdomain, nodata, error."""

    domain: str
    status: str
    hosts: tuple[MxHost, ...] = ()
    expires: float = 0.0  # monotonic
    detail: str = ""

    @property
    def primary(self) -> tuple[MxHost, ...]:
        """The most preferred hosts: where Postfix goes first."""
        if not self.hosts:
            return ()
        best = min(h.preference for h in self.hosts)
        return tuple(h for h in self.hosts if h.preference == best)


@lru_cache(maxsize=65536)  # recipients' domains repeat; parsing one costs more than the rest of a lookup
def ascii_domain(text: str) -> str | None:
    """A recipient domain as lower-case ASCII (IDN to A-labels), or None when it is not a domain name."""
    text = text.strip().rstrip(".")
    if not text or text.startswith(".") or "[" in text or ".." in text:
        return None
    try:
        name = dns.name.from_unicode(text) if not text.isascii() else dns.name.from_text(text)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None
    if len(name.labels) < 3:  # "example.com." has three labels with the root: at least one dot
        return None
    return name.to_text(omit_final_dot=True).lower()


class MxCache:
    def __init__(self, resolvers: Sequence[ListenAddress] = ()) -> None:
        self.resolver = dns.asyncresolver.Resolver(configure=not resolvers)
        if resolvers:
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(r.host, r.port) for r in resolvers]
        self.resolver.lifetime = LOOKUP_LIFETIME
        self.entries: dict[str, MxResult] = {}
        self.pending: dict[str, asyncio.Task[MxResult]] = {}
        self.lookups = 0  # DNS lookups started

    def cached(self, domain: str) -> MxResult | None:
        return self.entries.get(domain)

    async def get(self, domain: str, deadline: float | None) -> MxResult | None:
        entry = self.entries.get(domain)
        if entry is not None:
            if entry.expires <= time.monotonic():
                self._start(domain)  # serve the stale entry now, a fresh one for the next message
            return entry
        task = self._start(domain)
        try:
            return await asyncio.wait_for(asyncio.shield(task), deadline)
        except TimeoutError:
            return None  # finished in the background; the next lookup finds it

    def _start(self, domain: str) -> asyncio.Task[MxResult]:
        task = self.pending.get(domain)
        if task is None:
            self.lookups += 1
            task = self.pending[domain] = asyncio.ensure_future(self._lookup(domain))
            task.add_done_callback(lambda _t: self.pending.pop(domain, None))
        return task

    async def _lookup(self, domain: str) -> MxResult:
        try:
            result = await self.resolve(domain)
        except Exception as exc:
            log.exception("route: MX lookup of %s failed", domain)
            result = MxResult(domain, "error", detail=f"{type(exc).__name__}: {exc}")
        if result.status == "error":
            stale = self.entries.get(domain)
            if stale is not None and stale.status != "error":  # a DNS hiccup: keep what we knew a while longer
                result = MxResult(domain, stale.status, stale.hosts, time.monotonic() + ERROR_TTL, stale.detail)
            else:
                result = MxResult(domain, "error", (), time.monotonic() + ERROR_TTL, result.detail)
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[domain] = result
        return result

    async def resolve(self, domain: str) -> MxResult:
        """Look the domain's MX and their addresses up (no cache)."""
        now = time.monotonic()
        try:
            answer = await self.resolver.resolve(domain, "MX", search=False)
        except dns.resolver.NXDOMAIN:
            return MxResult(domain, "nxdomain", (), now + NEGATIVE_TTL, "domain does not exist")
        except dns.resolver.NoAnswer:
            (_, own, own_ttl), = await self._addresses([(domain, 0)])
            if not own:
                return MxResult(domain, "nodata", (), now + NEGATIVE_TTL, "no MX and no address")
            return MxResult(domain, "implicit", (MxHost(domain, 0, own),), now + _clamp(own_ttl),
                            "no MX: the domain's own address")
        except (dns.exception.DNSException, OSError) as exc:
            return MxResult(domain, "error", detail=f"{type(exc).__name__}: {exc}")
        records = sorted(answer, key=lambda r: r.preference)
        mx_ttl = answer.rrset.ttl if answer.rrset is not None else MIN_TTL
        if len(records) == 1 and records[0].exchange == dns.name.root:
            return MxResult(domain, "nullmx", (), now + _clamp(mx_ttl), "null MX: accepts no mail")
        targets = [(r.exchange.to_text(omit_final_dot=True).lower(), r.preference) for r in records[:MAX_HOSTS]]
        found = await self._addresses(targets)
        ttl = min([mx_ttl, *(t for _, a, t in found if a)])
        hosts = tuple(MxHost(name, pref, addrs) for (name, pref), (_, addrs, _) in zip(targets, found))
        return MxResult(domain, "ok", hosts, now + _clamp(ttl))

    async def _addresses(self, targets: list[tuple[str, int]]) -> list[tuple[str, tuple[str, ...], int]]:
        """(name, addresses, ttl) for each target, A and AAAA looked up side by side."""
        async def one(name: str, rdtype: str) -> tuple[list[str], int]:
            try:
                answer = await self.resolver.resolve(name, rdtype, search=False)
            except (dns.exception.DNSException, OSError):
                return [], MAX_TTL
            return [r.address for r in answer], answer.rrset.ttl if answer.rrset is not None else MAX_TTL

        jobs = [one(name, t) for name, _ in targets for t in ("A", "AAAA")]
        results = await asyncio.gather(*jobs)
        out = []
        for index, (name, _) in enumerate(targets):
            (v4, ttl4), (v6, ttl6) = results[2 * index], results[2 * index + 1]
            out.append((name, tuple(v4 + v6), min(ttl4 if v4 else MAX_TTL, ttl6 if v6 else MAX_TTL)))
        return out


def _clamp(ttl: int) -> float:
    return float(min(MAX_TTL, max(MIN_TTL, ttl)))
