"""Dynamic records: rules pick a pool, the pool's up values are answered by weight.

Semantics follow octoDNS's providers (Route 53, NS1): rules in order, first
match wins, a rule with `geos` and `subnets` matches when either does; a pool
with nothing up falls to its `fallback` chain, then to the record's plain
values that are up; with nothing up at all we answer the plain values anyway
(fail open: an answer that may work beats none).
"""

from __future__ import annotations

import ipaddress
import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Protocol

from .model import Address, DynamicRRset, PoolValue, Rule
from .prefixes import PrefixSet
from .wire import ClientSubnet

# Pool names used for answers that did not come from a pool; they are also
# the `pool` label of the answer metrics.
DEFAULT_POOL = "default"  # the record's plain values (no rule matched a pool that was up)
FAIL_OPEN_POOL = "fail-open"  # nothing was up: plain values regardless of health


class Located(Protocol):
    @property
    def prefixlen(self) -> int | None: ...

    def matches(self, geo: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What a client gets from one dynamic record, before the weighted pick."""

    pool: str  # a pool name, DEFAULT_POOL or FAIL_OPEN_POOL
    rule: int | None  # 1-based index of the rule that matched, None if none did
    candidates: tuple[PoolValue, ...]  # the values that may be answered


IsUp = Callable[[DynamicRRset, PoolValue], bool]


def static_status(record: DynamicRRset, value: PoolValue) -> bool:
    """Health as the zone file alone says it (`obey` counts as up)."""
    return value.status != "down"


def matches(rule: Rule, address: Address, locate: Callable[[], Located]) -> bool:
    if address in rule.subnets:
        return True
    if rule.geos:
        location = locate()
        return any(location.matches(geo) for geo in rule.geos)
    return not rule.subnets  # a rule with neither is the catch-all


def decide(record: DynamicRRset, address: Address, locate: Callable[[], Located], is_up: IsUp = static_status) -> Decision:
    """Run the rules for one client; `locate` is called at most once, and only if a geo rule is reached."""
    location: list[Located] = []

    def located() -> Located:
        if not location:
            location.append(locate())
        return location[0]

    for index, rule in enumerate(record.rules, 1):
        if not matches(rule, address, located):
            continue
        pool_name: str | None = rule.pool
        seen: set[str] = set()
        while pool_name is not None and pool_name not in seen and pool_name in record.pools:
            seen.add(pool_name)
            pool = record.pools[pool_name]
            up = tuple(v for v in pool.values if is_up(record, v))
            if up:
                return Decision(pool_name, index, up)
            pool_name = pool.fallback
        return _plain(record, index, is_up)
    return _plain(record, None, is_up)


def _plain(record: DynamicRRset, rule: int | None, is_up: IsUp) -> Decision:
    up = tuple(v for v in record.values if is_up(record, v))
    if up:
        return Decision(DEFAULT_POOL, rule, up)
    return Decision(FAIL_OPEN_POOL, rule, record.values)


class Picker:
    """Weighted random choice among one decision's candidates, as indexes (cheap to key a cache with).

    One value: always it. `count` 1: one index by weight. More: a weighted
    shuffle, i.e. weighted sampling without replacement, `count` deep.
    """

    __slots__ = ("values", "count", "cum", "total", "fixed", "rng")

    def __init__(self, values: tuple[PoolValue, ...], count: int, rng: random.Random) -> None:
        self.rng = rng  # the answering State's: a test seeds its own, never a module's
        self.values = values
        self.count = min(count, len(values))
        self.cum = list(accumulate(v.weight for v in values))
        self.total = self.cum[-1] if values else 0
        self.fixed: tuple[int, ...] | None = tuple(range(len(values))) if len(values) <= 1 else None

    def draw(self) -> tuple[int, ...]:
        if self.fixed is not None:
            return self.fixed
        if self.count == 1:
            return (bisect_right(self.cum, self.rng.random() * self.total),)
        remaining = list(range(len(self.values)))
        chosen: list[int] = []
        while len(chosen) < self.count:
            weights = [self.values[i].weight for i in remaining]
            index = self.rng.choices(remaining, weights=weights)[0]
            chosen.append(index)
            remaining.remove(index)
        return tuple(chosen)

    def chosen(self, draw: tuple[int, ...]) -> tuple[PoolValue, ...]:
        return tuple(self.values[i] for i in draw)


def scope_prefix(record_subnets: PrefixSet, address: Address, location_prefix: int | None, source_prefix: int) -> int:
    """The widest prefix around `address` over which a decision cannot change (RFC 7871 SCOPE).

    Starts from the database block the address fell in (the query's source
    prefix where the data gives no block) and narrows it until no rule subnet
    is cut by it, as gdnsd does (prefixes.PrefixSet.scope, without a scan).
    """
    return record_subnets.scope(address, location_prefix if location_prefix is not None else source_prefix)


def client_for(ecs: ClientSubnet | None, client: str) -> tuple[Address, int, bool]:
    """Who a decision is for: (address, source prefix, whether the answer needs an ECS scope).

    A usable ECS option (RFC 7871: prefix above 0, a global address) stands for the client;
    otherwise the packet's source, the resolver, does.
    """
    if ecs is not None and ecs.usable():
        return ecs.ip, ecs.source, True
    address = client_address(client)
    return address, address.max_prefixlen, False


def client_address(client: str) -> Address:
    """A socket's peer address as an address (an IPv4 client of a dual-stack socket as IPv4)."""
    address = ipaddress.ip_address(client.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
