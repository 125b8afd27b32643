"""Sets of IP prefixes (rule `subnets`) answering in O(log n), whatever their number.

A rule may list tens of thousands of network segments (a province, an ISP). Scanning
them for every client not seen before costs microseconds per prefix; here a set is
cut once, when loaded, into elementary ranges of addresses (sorted, searched with
bisect), each knowing:

- the longest prefix of the set that contains it (so: does the set contain an address);
- the greatest network address among the prefixes that end before it;

and the sorted network addresses give the first prefix that starts after an address.
That is all the ECS scope needs (`scope`): the longest prefix containing the address,
and the longest common leading bits with a prefix that does not contain it.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from typing import Iterable, Iterator, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class _Family:
    """The prefixes of one address family, cut into sorted elementary ranges."""

    __slots__ = ("bits", "bounds", "longest", "before", "starts")

    def __init__(self, bits: int, networks: Sequence[Network]) -> None:
        self.bits = bits
        spans = sorted({(int(n.network_address), int(n.broadcast_address), n.prefixlen) for n in networks})
        cuts = {0}
        for start, end, _ in spans:
            cuts.add(start)
            cuts.add(end + 1)
        cuts.discard(1 << bits)
        self.bounds = sorted(cuts)  # range i is [bounds[i], bounds[i+1])
        # The prefixes nest or are disjoint, so each range lies inside at most bits+1 of them:
        # painting shortest first leaves the longest on top, in O(n * bits) at worst.
        longest = [-1] * len(self.bounds)
        for start, end, length in sorted(spans, key=lambda span: span[2]):
            first = bisect_right(self.bounds, start) - 1
            last = bisect_right(self.bounds, end) - 1
            for index in range(first, last + 1):
                longest[index] = length
        self.longest = longest
        # Greatest network address among prefixes that end before range i starts (-1: none).
        before = [-1] * len(self.bounds)
        by_end = sorted(spans, key=lambda span: span[1])
        taken, greatest = 0, -1
        for index, bound in enumerate(self.bounds):
            while taken < len(by_end) and by_end[taken][1] < bound:
                greatest = max(greatest, by_end[taken][0])
                taken += 1
            before[index] = greatest
        self.before = before
        self.starts = sorted({start for start, _, _ in spans})

    def longest_containing(self, value: int) -> int:
        """Length of the longest prefix that contains the address, -1 if none does."""
        return self.longest[bisect_right(self.bounds, value) - 1]

    def scope(self, value: int, scope: int) -> int:
        index = bisect_right(self.bounds, value) - 1
        scope = max(scope, self.longest[index])
        # A prefix that does not contain the address but agrees with it on `common` >= scope
        # leading bits would be cut by a block of length `scope`: narrow past the first bit
        # where they differ. The prefixes agreeing longest with the address are the nearest
        # ones before and after it; the nearest before is the greatest that ends before it.
        common = -1
        if self.before[index] >= 0:
            common = self.bits - (value ^ self.before[index]).bit_length()
        following = bisect_right(self.starts, value)
        if following < len(self.starts):
            common = max(common, self.bits - (value ^ self.starts[following]).bit_length())
        if common >= scope:
            scope = common + 1
        return scope


class PrefixSet:
    """An immutable set of IPv4 and IPv6 networks; iterates them in the order given."""

    __slots__ = ("networks", "_v4", "_v6")

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(networks)
        self._v4: _Family | None = None
        self._v6: _Family | None = None
        v4 = [n for n in self.networks if n.version == 4]
        v6 = [n for n in self.networks if n.version == 6]
        if v4:
            self._v4 = _Family(32, v4)
        if v6:
            self._v6 = _Family(128, v6)

    def _family(self, address: Address) -> _Family | None:
        return self._v4 if address.version == 4 else self._v6

    def __contains__(self, address: Address) -> bool:
        family = self._family(address)
        return family is not None and family.longest_containing(int(address)) >= 0

    def scope(self, address: Address, scope: int) -> int:
        """The widest prefix length >= `scope` around `address` that no prefix of the set cuts
        (and at least as long as every prefix of the set containing the address), RFC 7871 SCOPE."""
        family = self._family(address)
        if family is not None:
            scope = family.scope(int(address), scope)
        return min(scope, address.max_prefixlen)

    def __iter__(self) -> Iterator[Network]:
        return iter(self.networks)

    def __len__(self) -> int:
        return len(self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefixSet) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    def __repr__(self) -> str:
        return f"PrefixSet({len(self.networks)} networks)"
