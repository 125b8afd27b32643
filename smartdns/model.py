"""The loaded data: what a zone file becomes, and what the answer path reads.

Every object here is immutable once built (frozen, slotted dataclasses;
dnspython `ImmutableRdataset` for the rdatasets): a reload builds new ones and
swaps them in whole, so a query never sees data change under it, from any
thread. Building them is zonefile.py's job; reading them needs no octoDNS.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA

from .prefixes import PrefixSet

if TYPE_CHECKING:
    from .dnssec.zone import SignedZone

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth a warning) in a zone file."""

    path: str
    line: int
    name: str  # the record's name as written ('' is shown as '@', unless rtype is '' too)
    rtype: str  # '' with name '': a problem of the file itself (size, encoding, YAML syntax)
    reason: str

    def __str__(self) -> str:
        if not self.name and not self.rtype:
            return f"{self.path}:{self.line}: {self.reason}"
        where = f"{self.name or '@'} {self.rtype}".strip()
        return f"{self.path}:{self.line}: {where}: {self.reason}"


class ZoneLoadError(Exception):
    """A zone file that cannot be served, with every problem found in it."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How to check a record's values (octoDNS `healthcheck`, smartdns extras)."""

    protocol: str  # TCP, HTTP, HTTPS, SMTP
    port: int
    path: str = "/_dns"
    host: str | None = None


@dataclass(frozen=True, slots=True)
class PoolValue:
    text: str  # presentation form, e.g. "192.0.2.10"; the health-check target for A/AAAA
    rdata: dns.rdata.Rdata  # the value ready to render
    weight: int = 1
    status: str = "obey"  # up | down | obey (follow the health check)


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    values: tuple[PoolValue, ...]
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of a dynamic record; matching it is policy.py's job."""

    pool: str
    geos: tuple[str, ...] = ()
    subnets: PrefixSet = PrefixSet()  # any iterable of networks is made one

    def __post_init__(self) -> None:
        if not isinstance(self.subnets, PrefixSet):
            object.__setattr__(self, "subnets", PrefixSet(self.subnets))


@dataclass(frozen=True, slots=True)
class DynamicRRset:
    """One dynamic record (A, AAAA, CNAME or DNAME) as loaded."""

    name: str  # owner as written in the zone, for messages and metrics ('' is the apex)
    rdtype: dns.rdatatype.RdataType
    ttl: int
    pools: Mapping[str, Pool]
    rules: tuple[Rule, ...]
    values: tuple[PoolValue, ...]  # the record's plain values
    max_answers: int = 1
    healthcheck: HealthCheck | None = None
    all_subnets: PrefixSet = field(init=False, repr=False, compare=False)  # every rule's, for the ECS scope

    def __post_init__(self) -> None:
        listed = [rule.subnets for rule in self.rules if rule.subnets]
        # one rule with subnets (the usual domestic rule): its set serves for the scope too
        every = listed[0] if len(listed) == 1 else PrefixSet(net for subnets in listed for net in subnets)
        object.__setattr__(self, "all_subnets", every)

    def subnets(self) -> PrefixSet:
        return self.all_subnets


class StaticRRset:
    """A static RRset. Loaded from plain values (`deferred`), its dnspython rdataset is made from
    their text the first time anything reads it: building rdata objects is most of what a big
    zone costs to load, and most names of a big zone are never asked for between two reloads.

    Immutable as far as anyone can tell: the rdataset, once made, is the one it stays (DNSSEC
    finds an RRset's signatures by the rdataset's identity), made under a lock so that two
    threads asking at once get the same one.
    """

    __slots__ = ("_rdataset", "_plain")

    _rdataset: dns.rdataset.ImmutableRdataset | None
    _plain: tuple[dns.rdatatype.RdataType, int, tuple[str, ...]] | None

    def __init__(self, rdataset: dns.rdataset.ImmutableRdataset) -> None:
        object.__setattr__(self, "_rdataset", rdataset)
        object.__setattr__(self, "_plain", None)

    @classmethod
    def deferred(cls, rdtype: dns.rdatatype.RdataType, ttl: int, texts: tuple[str, ...]) -> StaticRRset:
        """From values already known to be valid in presentation form (simplerecords.py)."""
        rrset = cls.__new__(cls)
        object.__setattr__(rrset, "_rdataset", None)
        object.__setattr__(rrset, "_plain", (rdtype, ttl, texts))
        return rrset

    @property
    def rdataset(self) -> dns.rdataset.ImmutableRdataset:
        made = self._rdataset
        if made is None:
            with _MAKING:
                made = self._rdataset
                if made is None:
                    assert self._plain is not None
                    rdtype, ttl, texts = self._plain
                    made = immutable_rdataset(rdtype, ttl, [rdata_from_text(rdtype, text) for text in texts])
                    object.__setattr__(self, "_rdataset", made)
        return made

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a StaticRRset does not change; build a new one")

    def texts(self) -> tuple[str, ...]:
        """The values in presentation form, without making the rdataset when it is not made yet."""
        if self._rdataset is None and self._plain is not None:
            return self._plain[2]
        return tuple(rdata.to_text() for rdata in self.rdataset)

    def __getstate__(self) -> tuple[object, object]:
        return (self._rdataset, self._plain)

    def __setstate__(self, state: tuple[object, object]) -> None:
        object.__setattr__(self, "_rdataset", state[0])
        object.__setattr__(self, "_plain", state[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StaticRRset):
            return NotImplemented
        if self._plain is not None and other._plain is not None:
            return self._plain == other._plain  # the values as loaded: no rdata made to compare them
        return self.rdataset == other.rdataset and self.rdataset.ttl == other.rdataset.ttl

    def __hash__(self) -> int:
        return hash((self.rdataset.rdtype, self.rdataset.ttl))

    def __repr__(self) -> str:
        if self._rdataset is None and self._plain is not None:
            return f"StaticRRset.deferred{self._plain!r}"
        return f"StaticRRset({self._rdataset!r})"


_MAKING = threading.Lock()


def rdata_from_text(rdtype: dns.rdatatype.RdataType, text: str,
                    origin: dns.name.Name | None = None) -> dns.rdata.Rdata:
    """One IN rdata from its presentation form (relative names under `origin`, if given)."""
    if rdtype == dns.rdatatype.A:  # most of a big zone: the constructor checks what the text parser would, faster
        return dns.rdtypes.IN.A.A(dns.rdataclass.IN, rdtype, text)
    if rdtype == dns.rdatatype.AAAA:
        return dns.rdtypes.IN.AAAA.AAAA(dns.rdataclass.IN, rdtype, text)
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=origin, relativize=False)


def dynamic_sources(nodes: Iterable[Mapping[dns.rdatatype.RdataType, RRsetSource]]) -> list[DynamicRRset]:
    """The dynamic records among these nodes."""
    return [source for node in nodes for source in node.values() if isinstance(source, DynamicRRset)]


RRsetSource = StaticRRset | DynamicRRset


def names_with_ancestors(keys: Iterable[bytes], apex: int) -> set[bytes]:
    """These lower-case wire names and every ancestor of theirs down to the apex (`apex`: its length),
    each a suffix of a name at a label start."""
    names: set[bytes] = set()
    for key in keys:
        at = 0
        while len(key) - at >= apex:
            suffix = key[at:]
            if suffix in names:
                break  # and so are its ancestors, added with it
            names.add(suffix)
            at += key[at] + 1
    return names


def immutable_rdataset(rdtype: dns.rdatatype.RdataType, ttl: int,
                       rdatas: "list[dns.rdata.Rdata] | tuple[dns.rdata.Rdata, ...]") -> dns.rdataset.ImmutableRdataset:
    """An IN rdataset that nothing can change after this."""
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype, ttl=ttl)
    if rdtype == dns.rdatatype.RRSIG or rdtype == dns.rdatatype.SIG:  # the covered type is checked on adding
        for rdata in rdatas:
            rdataset.add(rdata)
        return dns.rdataset.ImmutableRdataset(rdataset)
    for rdata in rdatas:
        if rdata.rdclass != dns.rdataclass.IN or rdata.rdtype != rdtype:
            raise dns.rdataset.IncompatibleTypes
    if dns.rdatatype.is_singleton(rdtype):
        rdatas = rdatas[-1:]  # as adding does: the last one replaces any before
    # what adding one by one makes (the first of equal rdatas kept, in order), each rdata hashed once where
    # adding hashes it twice: the hash renders the rdata (an SOA's is a fifth of a small zone's build)
    rdataset.items = dict.fromkeys(rdatas)
    return dns.rdataset.ImmutableRdataset(rdataset)


@dataclass(frozen=True, slots=True)
class ZoneData:
    """One loaded zone. Names are keyed by lower-case wire form (DNS is case-insensitive)."""

    origin: dns.name.Name
    path: str
    nodes: Mapping[bytes, Mapping[dns.rdatatype.RdataType, RRsetSource]]
    soa: dns.rdataset.ImmutableRdataset
    serial: int
    warnings: tuple[Problem, ...] = ()
    record_count: int = 0
    names: frozenset[bytes] = field(default=frozenset())  # every name and every ancestor up to the apex
    text: str = ""  # the origin as text, e.g. "example.com."
    wire: bytes = b""  # the origin in lower-case wire form
    dnssec: SignedZone | None = None  # signatures and NSEC chain when the zone has keys (dnssec/zone.py)
    # the dynamic records among `nodes` (the same objects): what health checks follow, found without a
    # walk over every node at each reload
    dynamic: tuple[DynamicRRset, ...] = ()
    # the file version and settings it was built from (reload.file_stamp): the same stamp, the same zone
    stamp: tuple[object, ...] = ()
    # per name, a hash of what its node was built from (the apex's SOA aside): how the loader tells the
    # names a reload changed, to hand over only those (handover.py); the answering processes drop it
    digests: Mapping[bytes, int] | None = None

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 5: min(SOA TTL, SOA MINIMUM)."""
        minimum: int = self.soa[0].minimum
        return min(self.soa.ttl, minimum)
