"""Validated records -> the immutable model (`ZoneData`).

The records arrive as plain data (`RecordSpec`) from the octoDNS adapter
(zonefile.py); here every value becomes a dnspython rdata, sizes are checked
against what a DNS message can carry, the SOA and its content-derived serial
are made, and the zone's names are indexed for the answer path.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import operator
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Sequence

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA

from .config import SoaSettings
from .model import (
    DynamicRRset,
    HealthCheck,
    Pool,
    PoolValue,
    Problem,
    RRsetSource,
    Rule,
    StaticRRset,
    ZoneData,
    ZoneLoadError,
    dynamic_sources,
    immutable_rdataset,
    names_with_ancestors,
    rdata_from_text,
)
from .prefixes import PrefixSet
from .wire import name_key
from .yamlfile import LineDict

# A relative name that is its own presentation form: lower-case labels of 1-63 characters, no escapes
_PLAIN_NAME = re.compile(r"[a-z0-9_*-]{1,63}(?:\.[a-z0-9_*-]{1,63})*")
_RDTYPES = {"A": dns.rdatatype.A, "AAAA": dns.rdatatype.AAAA, "TXT": dns.rdatatype.TXT, "MX": dns.rdatatype.MX}
_FIXED_SIZE = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 16}  # wire bytes, known without rendering
MAX_RDATA = 65535  # RDLENGTH is 16 bits (RFC 1035 3.2.1)
RR_OVERHEAD = 12  # a compressed owner (2), type, class, TTL, RDLENGTH (10)
MAX_RRSET = 65535 - 512  # what a 65535-byte message holds after header, question and OPT


@dataclass(frozen=True, slots=True)
class PoolSpec:
    name: str
    values: tuple[tuple[str, int, str], ...]  # (value text, weight, status)
    fallback: str | None


@dataclass(frozen=True, slots=True)
class DynamicSpec:
    pools: tuple[PoolSpec, ...]
    rules: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # (pool, geos, subnets)
    max_answers: int
    healthcheck: HealthCheck | None


class RecordSpec(NamedTuple):
    """One record as octoDNS validated it, in plain data (a named tuple: made three times faster than a
    frozen dataclass, and a big zone makes one per record)."""

    name: str  # relative to the zone, '' for the apex
    rtype: str
    ttl: int
    texts: tuple[str, ...]  # the values in presentation form
    entry: LineDict  # where it was written, for messages
    dynamic: DynamicSpec | None
    digest: Sequence[Any]  # what the content serial is made from (as JSON)
    # the values' wire size when they are known to be valid (simplerecords.py): built when first read
    size: int | None = None


class ZoneBuilder:
    def __init__(self, path: str, origin: dns.name.Name, soa: SoaSettings) -> None:
        self.path = path
        self.origin = origin
        self.soa_settings = soa
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.rdatas: dict[tuple[dns.rdatatype.RdataType, str], dns.rdata.Rdata] = {}
        self.sizes: dict[int, int] = {}  # wire length of each rdata above, by id
        self.origin_key = name_key(origin)
        self.origin_text = origin.to_text()

    def problem(self, line: int, name: str, rtype: str, reason: str) -> None:
        self.problems.append(Problem(self.path, line, name, rtype, reason))

    def build(self, records: list[RecordSpec]) -> ZoneData:
        nodes: dict[bytes, dict[dns.rdatatype.RdataType, RRsetSource]] = {}
        digest_items = []
        digests: dict[bytes, int] = {}
        origin_key = self.origin_key
        for record in records:
            key = self.owner_key(record.name, origin_key, record.size is not None)
            rdtype = _RDTYPES.get(record.rtype) or dns.rdatatype.RdataType.make(record.rtype)
            # what the node is made of: type, TTL, values, and a dynamic record's pools, rules and settings
            digests[key] = hash((digests.get(key, 0), record.rtype, record.ttl, record.texts, record.dynamic))
            if record.size is not None:  # plain values, known to be valid: made into rdata when first read
                if record.size + RR_OVERHEAD * len(record.texts) > MAX_RRSET:
                    self.too_big(record, record.size + RR_OVERHEAD * len(record.texts))
                    continue
                nodes.setdefault(key, {})[rdtype] = StaticRRset.deferred(rdtype, record.ttl, record.texts)
                digest_items.append(record.digest)
                continue
            rdatas = [self.rdata(rdtype, text, record) for text in record.texts]
            if any(r is None for r in rdatas):
                continue
            size = sum(self.sizes[id(r)] + RR_OVERHEAD for r in rdatas if r is not None)
            if size > MAX_RRSET:
                self.too_big(record, size)
                continue
            plain = tuple(PoolValue(text, rdata) for text, rdata in zip(record.texts, rdatas) if rdata is not None)
            source: RRsetSource
            if record.dynamic is not None:
                source = self.dynamic(record, record.dynamic, rdtype, plain)
            else:
                source = StaticRRset(immutable_rdataset(rdtype, record.ttl, [v.rdata for v in plain]))
            nodes.setdefault(key, {})[rdtype] = source
            digest_items.append(record.digest)
        if self.problems:
            raise ZoneLoadError(self.problems)
        self.warn_geo_bypass(records)
        soa, serial = self.soa(nodes, digest_items)
        nodes.setdefault(origin_key, {})[dns.rdatatype.SOA] = StaticRRset(soa)
        names = names_with_ancestors(nodes, len(origin_key))
        return ZoneData(
            origin=self.origin,
            path=self.path,
            nodes=MappingProxyType({k: MappingProxyType(v) for k, v in nodes.items()}),
            soa=soa,
            serial=serial,
            warnings=tuple(self.warnings),
            record_count=len(records),
            names=frozenset(names),
            text=self.origin_text,
            dynamic=tuple(dynamic_sources(nodes.values())),
            wire=origin_key,
            digests=digests,
        )

    def too_big(self, record: RecordSpec, size: int) -> None:
        entry = record.entry
        self.problem(entry.line_of("values") if "values" in entry else entry.line, record.name, record.rtype,
                     f"the values take {size} bytes in wire format, more than a DNS message can carry "
                     f"({MAX_RRSET} with its header, question and OPT)")

    def owner_key(self, name: str, origin_key: bytes, plain: bool = False) -> bytes:
        """The owner's lower-case wire form; written out directly for plain names (most of a zone). `plain`:
        the name is known to be one (simplerecords.py checked it with a stricter pattern)."""
        if not name:
            return origin_key
        if plain or _PLAIN_NAME.fullmatch(name):
            if "." not in name:  # one label: most names
                return bytes((len(name),)) + name.encode() + origin_key
            return b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + origin_key
        return name_key(dns.name.from_text(name, self.origin))

    def rdata(self, rdtype: dns.rdatatype.RdataType, text: str, record: RecordSpec) -> dns.rdata.Rdata | None:
        """The value as an rdata; one object for every equal value of the zone (they are immutable)."""
        known = self.rdatas.get((rdtype, text))
        if known is not None:
            return known
        entry = record.entry
        line = entry.line_of("value") if "value" in entry else entry.line_of("values")
        rdata: dns.rdata.Rdata
        try:
            if rdtype in _FIXED_SIZE:
                rdata, size = _address(rdtype, text), _FIXED_SIZE[rdtype]
            else:
                rdata = rdata_from_text(rdtype, text, self.origin)
                size = len(rdata.to_wire() or b"")
        except Exception as exc:  # dnspython is stricter than octoDNS in places (e.g. SVCB params)
            self.problem(line, record.name, record.rtype, f"value {_short(text)!r} cannot be encoded: {exc}")
            return None
        if size > MAX_RDATA:  # its RDLENGTH could not be written: every answer with it would fail
            self.problem(line, record.name, record.rtype,
                         f"value is {size} bytes in wire format, more than the {MAX_RDATA} one record can hold")
            return None
        self.rdatas[(rdtype, text)] = rdata
        self.sizes[id(rdata)] = size
        return rdata

    def dynamic(self, record: RecordSpec, spec: DynamicSpec, rdtype: dns.rdatatype.RdataType,
                plain: tuple[PoolValue, ...]) -> DynamicRRset:
        def value(text: str, weight: int, status: str) -> PoolValue | None:
            rdata = self.rdata(rdtype, text, record)
            return PoolValue(text, rdata, weight, status) if rdata is not None else None

        pools = {}
        for pool in spec.pools:
            values = tuple(value(*v) for v in pool.values)
            pools[pool.name] = Pool(pool.name, tuple(v for v in values if v is not None), pool.fallback)
        rules = tuple(
            Rule(pool, geos, _prefix_set(subnets))
            for pool, geos, subnets in spec.rules
        )
        return DynamicRRset(
            name=record.name,
            rdtype=rdtype,
            ttl=record.ttl,
            pools=MappingProxyType(pools),
            rules=rules,
            values=plain,
            max_answers=spec.max_answers,
            healthcheck=spec.healthcheck,
        )

    def warn_geo_bypass(self, records: list[RecordSpec]) -> None:
        dynamic = {record.name for record in records if record.dynamic is not None}
        if not dynamic:
            return  # (a name is only warned of with a dynamic record)
        by_name: dict[str, dict[str, RecordSpec]] = {}
        for record in records:
            if record.name in dynamic:
                by_name.setdefault(record.name, {})[record.rtype] = record
        for name, types in by_name.items():
            a, aaaa = types.get("A"), types.get("AAAA")
            if not (a and aaaa):
                continue
            a_dyn, aaaa_dyn = a.dynamic is not None, aaaa.dynamic is not None
            if a_dyn != aaaa_dyn:
                static, kind = (aaaa, "IPv6") if a_dyn else (a, "IPv4")
                self.warnings.append(Problem(
                    self.path, static.entry.line, name, static.rtype,
                    f"A is {'dynamic' if a_dyn else 'static'} but AAAA is {'dynamic' if aaaa_dyn else 'static'}: "
                    f"{kind} senders bypass the geo decision",
                ))

    def soa(self, nodes: dict[bytes, dict[dns.rdatatype.RdataType, RRsetSource]],
            digest_items: list[Any]) -> tuple[dns.rdataset.ImmutableRdataset, int]:
        settings = self.soa_settings
        apex = nodes.get(self.origin_key, {})
        ns = apex.get(dns.rdatatype.NS)
        if settings.mname:
            mname = dns.name.from_text(settings.mname, self.origin)
        elif isinstance(ns, StaticRRset):
            mname = first_in_dns_order(ns.texts())
        else:
            mname = dns.name.from_text("ns1", self.origin)
        rname = dns.name.from_text(settings.rname or "hostmaster", self.origin)
        fields = [mname.to_text(), rname.to_text(), settings.refresh, settings.retry, settings.expire, settings.minimum,
                  settings.ttl]
        serial = settings.serial or content_serial(digest_items, fields)
        rdata = dns.rdtypes.ANY.SOA.SOA(
            dns.rdataclass.IN, dns.rdatatype.SOA, mname, rname, serial,
            settings.refresh, settings.retry, settings.expire, settings.minimum,
        )
        return immutable_rdataset(dns.rdatatype.SOA, settings.ttl, (rdata,)), serial


@functools.lru_cache(maxsize=1024)
def _address(rdtype: dns.rdatatype.RdataType, text: str) -> dns.rdata.Rdata:
    """An A or AAAA rdata, one object for the zones that give the same address (a hosting provider's
    zones point their dynamic records at the same pools; they are immutable)."""
    return rdata_from_text(rdtype, text)


@functools.lru_cache(maxsize=32)
def _prefix_set(subnets: tuple[str, ...]) -> PrefixSet:
    """One set for every rule that lists the same subnets: a hosting provider's zones share their
    segment lists, which are then parsed and cut once, and held once."""
    return PrefixSet(ipaddress.ip_network(s, strict=False) for s in subnets)


# An absolute name whose labels compare in DNS order as its text does: lower-case, no escapes
_ORDERED_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+")


def first_in_dns_order(texts: tuple[str, ...]) -> dns.name.Name:
    """The first of these absolute names in DNS order (as dnspython sorts them): compared as text, label by
    label from the right, when their text allows it (one name made, not one per text)."""
    if texts and all(_ORDERED_NAME.fullmatch(text) for text in texts):
        return dns.name.from_text(min(texts, key=lambda text: text[:-1].split(".")[::-1]))
    return min(dns.name.from_text(text) for text in texts)


_NAME_AND_TYPE = operator.itemgetter(0, 1)  # a digest's name and type: what records are sorted by


def content_serial(records: list[Any], soa_fields: list[Any]) -> int:
    """A serial from the zone's content alone, so every server with the same data agrees.

    A hash cannot grow monotonically; nothing here transfers zones by serial,
    and a pinned `serial` in the config is there for those who need one.
    """
    canonical = json.dumps([sorted(records, key=_NAME_AND_TYPE), soa_fields], sort_keys=True, default=str)
    serial = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big")
    return serial or 1


def _short(text: str, limit: int = 80) -> str:
    """A value as quoted in a message: long values cut, so that one error stays one readable line."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
