"""The routing decision for one recipient domain, from what is known about it (no I/O here).

1. ours (local domains, zones we serve), domestic MX, or nowhere to send: `NOTFOUND ` (Postfix's default path);
2. overseas (or not known yet) and not troubled: `OK smartdns-direct-R:` (direct, relay R as fallback);
3. overseas and troubled: `OK smartdns-relay-R:[host]:port` (straight to relay R over TLS with AUTH).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..geo import Location
from .mx import MxResult
from .relays import RelayPool
from .trouble import Troubled, block_key, domain_key

NOTFOUND = "NOTFOUND "


@dataclass(frozen=True, slots=True)
class Decision:
    answer: str  # local, domestic, default, direct, relay: the metrics label
    reply: str  # what Postfix gets
    reason: str
    relay: str | None = None
    location: Location | None = None  # where the primary MX is, when known


def direct_service(relay: str) -> str:
    return f"smartdns-direct-{relay}"


def relay_service(relay: str) -> str:
    return f"smartdns-relay-{relay}"


def is_home(address: str, location: Location, home: Sequence[str]) -> bool:
    """Domestic: in a home geo, or not a global address at all (a private or local network)."""
    if any(location.matches(g) for g in home):
        return True
    if location.source != "unknown":
        return False
    try:
        return not ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def decide(domain: str, *, local: bool, mx: MxResult | None, home: Sequence[str],
           locate: Callable[[str], Location], troubled: Callable[[str], Troubled | None],
           relays: RelayPool) -> Decision:
    if local:
        return Decision("local", NOTFOUND, f"{domain} is one of our domains")
    if mx is not None and mx.status in ("nxdomain", "nodata", "nullmx"):
        return Decision("default", NOTFOUND, f"{domain}: {mx.detail}; Postfix reports it")
    location = None
    if mx is not None and mx.hosts:
        addresses = [a for host in mx.primary for a in host.addresses]
        if not addresses:
            return Decision("default", NOTFOUND, f"{domain}: its MX hosts have no address; Postfix reports it")
        located = [(a, locate(a)) for a in addresses]
        if all(is_home(a, loc, home) for a, loc in located):
            return Decision("domestic", NOTFOUND, f"MX {', '.join(addresses)} domestic ({_where(located[0][1])})",
                            location=located[0][1])
        location = next((loc for a, loc in located if not is_home(a, loc, home)), None)
    choice = relays.choose(location)
    if choice is None:
        return Decision("default", NOTFOUND, "overseas, but no relay is configured", location=location)
    relay, relay_up, relay_why = choice
    where = f"MX overseas ({_where(location)})" if location is not None else \
        f"MX not known yet ({mx.detail if mx is not None else 'lookup still running'})"
    trouble = _trouble(domain, mx, troubled)
    if trouble is not None and relay_up:
        key, entry = trouble
        return Decision("relay", f"OK {relay_service(relay.name)}:{relay.nexthop}",
                        f"{where}; {key} troubled ({entry.reason}); relay {relay.name}: {relay_why}",
                        relay.name, location)
    note = f"; {trouble[0]} troubled, but no relay is up" if trouble is not None else ""
    return Decision("direct", f"OK {direct_service(relay.name)}:",
                    f"{where}{note}; direct first, fallback relay {relay.name}: {relay_why}", relay.name, location)


def _trouble(domain: str, mx: MxResult | None, troubled: Callable[[str], Troubled | None]) -> tuple[str, Troubled] | None:
    """The domain's own trouble, else that of any address block of its primary MX hosts."""
    keys = [domain_key(domain)]
    if mx is not None:
        keys += [k for host in mx.primary for a in host.addresses if (k := block_key(a)) is not None]
    for key in keys:
        entry = troubled(key)
        if entry is not None:
            return key, entry
    return None


def _where(location: Location | None) -> str:
    if location is None or location.source == "unknown":
        return "location unknown"
    return "-".join(p for p in (location.continent, location.country) if p)
