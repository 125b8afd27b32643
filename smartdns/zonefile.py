"""octoDNS YAML zone files -> immutable `ZoneData`: the only module that imports octodns.

octoDNS validates the records (`Record.new`, `Zone.validate`); on top of it we
reject what it lets through (duplicate keys, unknown keys, `dynamic` on types
without dynamic support, TTLs that are not integers) and convert every value to
a dnspython rdata, ready to render. Every problem names file, line, record and
reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
from octodns.record import Record
from octodns.record.base import value_to_rdata_text
from octodns.record.exception import ValidationError as RecordValidationError
from octodns.record.geo_data import geo_data
from octodns.zone import Zone
from octodns.zone.exception import ValidationError as ZoneValidationError

from .config import SoaSettings
from .policy import DynamicRRset, HealthCheck, Pool, PoolValue, Rule
from .yamlfile import LineDict, YamlError, load_file

log = logging.getLogger(__name__)

# octoDNS's default validators, plus the zone checks that matter for serving:
# loops and CNAME clashes would otherwise reach resolvers (RFC 1034 3.6.2, RFC 2181 10.3).
Record.enable_validators(["legacy"])
Zone.enable_zone_validators(["legacy"])
for _validator in ("no-cname-loop", "root-cname", "dname-coexistence", "mx-target-not-cname",
                   "ns-target-not-cname", "srv-target-not-cname"):
    Zone.enable_zone_validator(_validator)

DEFAULT_TTL = 3600  # octoDNS YamlProvider's default_ttl
MAX_TTL = 2**31 - 1  # RFC 2181 8
DYNAMIC_TYPES = frozenset({"A", "AAAA", "CNAME", "DNAME"})
# octoDNS pseudo types that no DNS server can answer as such
UNSERVABLE_TYPES = frozenset({"ALIAS", "URLFWD"})
RECORD_KEYS = frozenset({"type", "ttl", "value", "values", "dynamic", "octodns"})
DYNAMIC_KEYS = frozenset({"pools", "rules"})
POOL_KEYS = frozenset({"fallback", "values"})
POOL_VALUE_KEYS = frozenset({"value", "weight", "status"})
RULE_KEYS = frozenset({"geos", "pool", "subnets"})
OCTODNS_KEYS = frozenset({"healthcheck", "ignored", "excluded", "included", "lenient", "smartdns"})
HEALTHCHECK_KEYS = frozenset({"host", "path", "port", "protocol"})
SMARTDNS_KEYS = frozenset({"max_answers", "healthcheck"})
HEALTH_PROTOCOLS = frozenset({"TCP", "HTTP", "HTTPS", "SMTP"})
# A zone file bigger than this is refused unread: YAML costs many times its size in memory,
# and a runaway generator must not take a serving process down with it.
MAX_ZONE_BYTES = 64 * 1024 * 1024
MAX_RDATA = 65535  # RDLENGTH is 16 bits (RFC 1035 3.2.1)
RR_OVERHEAD = 12  # a compressed owner (2), type, class, TTL, RDLENGTH (10)
MAX_RRSET = 65535 - 512  # what a 65535-byte message holds after header, question (<= 259) and OPT

# Country -> continent as octoDNS knows it, so that a geo "AS" means what octoDNS means.
CONTINENT_OF: Mapping[str, str] = MappingProxyType(
    {country: continent for continent, countries in geo_data.items() for country in countries}
)
COUNTRY_NAMES: Mapping[str, str] = MappingProxyType(
    {country: info["name"] for countries in geo_data.values() for country, info in countries.items()}
)


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
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class StaticRRset:
    rdataset: dns.rdataset.Rdataset  # never mutated after loading


RRsetSource = StaticRRset | DynamicRRset


@dataclass(frozen=True, slots=True)
class ZoneData:
    """One loaded zone. Names are keyed by lower-case wire form (DNS is case-insensitive)."""

    origin: dns.name.Name
    path: str
    nodes: Mapping[bytes, Mapping[int, RRsetSource]]
    soa: dns.rdataset.Rdataset
    serial: int
    warnings: tuple[Problem, ...] = ()
    record_count: int = 0
    names: frozenset[bytes] = field(default=frozenset())  # every name and every ancestor up to the apex
    text: str = ""  # the origin as text, e.g. "example.com."
    wire: bytes = b""  # the origin in lower-case wire form

    @property
    def negative_ttl(self) -> int:
        """RFC 2308 5: min(SOA TTL, SOA MINIMUM)."""
        return min(self.soa.ttl, self.soa[0].minimum)


def zone_name_for(path: Path) -> str:
    """`zones/example.com.yaml` serves `example.com.`."""
    return path.name[: -len(".yaml")].lower().rstrip(".") + "."


def load_zone(path: str | Path, soa: SoaSettings) -> ZoneData:
    """Load and validate one zone file; raises ZoneLoadError listing every problem found."""
    path = Path(path)
    where = str(path)
    try:
        origin = dns.name.from_text(zone_name_for(path))
    except dns.exception.DNSException as exc:
        raise ZoneLoadError([Problem(where, 1, "", "", f"file name is not a zone name: {exc}")]) from None
    try:
        data = load_file(path, MAX_ZONE_BYTES)
    except YamlError as exc:
        raise ZoneLoadError([Problem(where, exc.line, _record_name_at(path, exc.line), "", exc.reason)]) from None
    except OSError as exc:
        raise ZoneLoadError([Problem(where, 1, "", "", f"cannot read: {exc.strerror}")]) from None
    if data is None:
        raise ZoneLoadError([Problem(where, 1, "", "", "the zone is empty")])
    if not isinstance(data, LineDict):
        raise ZoneLoadError([Problem(where, 1, "", "", "a zone file is a mapping of names to records")])
    try:
        return _Loader(where, origin, soa).load(data)
    except ZoneLoadError:
        raise
    except Exception as exc:  # a shape no check foresaw: this zone fails to load, the server goes on
        log.debug("loading %s", where, exc_info=True)
        raise ZoneLoadError([Problem(where, 1, "", "", f"cannot load the zone ({type(exc).__name__}: {exc})")]) from None


# A top-level key (a record name, quoted or plain) at the start of a line, then a colon.
_TOP_KEY = re.compile(r"""^('(?:[^']|'')*'|"[^"]*"|[^\s#'"-][^:#]*?)\s*:(?:\s|$)""")


def _record_name_at(path: Path, line: int) -> str:
    """The record a YAML error at `line` is in (the top-level key at or above it), '@' for the apex,
    '' when there is none: YAML reports a line only, an admin thinks in records."""
    try:
        if os.path.getsize(path) > MAX_ZONE_BYTES:
            return ""
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()[:line]
    except OSError:
        return ""
    for text in reversed(lines):
        if text.startswith(("---", "...")):
            return ""  # a document marker: in no record
        match = _TOP_KEY.match(text)
        if match:
            key = match.group(1)
            if key[0] == "'":
                key = key[1:-1].replace("''", "'")
            elif key[0] == '"':
                key = key[1:-1]
            return key or "@"
    return ""


class _Loader:
    def __init__(self, path: str, origin: dns.name.Name, soa: SoaSettings) -> None:
        self.path = path
        self.origin = origin
        self.soa_settings = soa
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.zone = Zone(origin.to_text(), [])

    def problem(self, line: int, name: str, rtype: str, reason: str) -> None:
        self.problems.append(Problem(self.path, line, name, rtype, reason))

    def load(self, data: LineDict) -> ZoneData:
        records: list[tuple[Any, LineDict]] = []
        for name, entries in data.items():
            line = data.line_of(name)
            if not isinstance(name, str):
                self.problem(line, str(name), "", "record name must be a string")
                continue
            if name.endswith("."):
                self.problem(line, name, "", self.absolute_name(name))
                continue
            if isinstance(entries, LineDict):
                entries = [entries]
            if not isinstance(entries, list) or not entries:
                self.problem(line, name, "", "expected a record (a mapping) or a list of records")
                continue
            for entry in entries:
                try:
                    record = self.record(name, entry, line)
                except Exception as exc:  # a shape no check foresaw: a problem of this record, never a crash
                    log.debug("loading %s %s", self.path, name, exc_info=True)
                    self.problem(getattr(entry, "line", line), name, "",
                                 f"cannot load this record ({type(exc).__name__}: {exc})")
                    continue
                if record is not None:
                    records.append((record, entry))
        if not self.problems:
            try:
                self.zone.validate()
            except ZoneValidationError as exc:
                entries_of = {id(record): entry for record, entry in records}
                for reason in exc.reasons:
                    self.zone_problem(reason, entries_of)
        if not self.problems and not any(r._type == "NS" and r.name == "" for r, _ in records):
            self.problem(1, "", "NS", "the zone has no NS records at its apex")
        if self.problems:
            raise ZoneLoadError(self.problems)
        return self.build(records)

    def absolute_name(self, name: str) -> str:
        """Why a name ending in a dot is refused: octoDNS names are relative to the zone (it would
        read `foo.other.org.` as `foo.other.org..example.com.`, an invalid name)."""
        try:
            absolute = dns.name.from_text(name)
        except dns.exception.DNSException:
            return f"record names are relative to the zone {self.origin}, and {name!r} ends with a dot"
        if absolute.is_subdomain(self.origin):
            relative = absolute.relativize(self.origin).to_text()
            hint = "''" if relative == "@" else repr(relative)
            return f"record names are relative to the zone: write {hint} for {absolute}, without the zone and the dot"
        return f"{absolute} is outside the zone {self.origin}: a zone file holds only names in its zone, relative to it"

    def zone_problem(self, reason: Any, entries_of: dict[int, LineDict]) -> None:
        """A zone-wide octoDNS reason (loops, clashes), placed at the first record it names."""
        located = sorted(((entries_of[id(r)].line, r) for r in getattr(reason, "records", ()) if id(r) in entries_of),
                         key=lambda item: item[0])
        if not located:
            self.problem(1, "", "", str(reason))
            return
        line, record = located[0]
        text = getattr(reason, "reason", str(reason))
        others = sorted({at for at, _ in located[1:]} - {line})
        if others:
            text += f" (also line{'s' if len(others) > 1 else ''} {', '.join(map(str, others))})"
        if getattr(reason, "validator_id", None):
            text += f", via: {reason.validator_id}"
        self.problem(line, record.name, record._type, text)

    def record(self, name: str, entry: Any, line: int) -> Any:
        if not isinstance(entry, LineDict):
            self.problem(line, name, "", "a record must be a mapping with a type")
            return None
        line = entry.line
        rtype = entry.get("type")
        rtype_text = rtype if isinstance(rtype, str) else ""
        before = len(self.problems)
        for reason, at in self.precheck(entry):
            self.problem(at, name, rtype_text, reason)
        if len(self.problems) > before:
            return None
        data = dict(entry)
        data.setdefault("ttl", DEFAULT_TTL)
        data = _with_context(data, entry)
        try:
            record = Record.new(self.zone, name, data)
        except RecordValidationError as exc:
            for reason in exc.reasons:
                self.problem(_reason_line(str(reason), entry), name, rtype_text, str(reason))
            return None
        except Exception as exc:  # octoDNS raises bare Exception for a missing/unknown type
            self.problem(line, name, rtype_text, str(exc).split(", ")[0])
            return None
        try:
            self.zone.add_record(record)
        except Exception as exc:  # duplicate record, sub-zone clashes
            first = re.search(r"existing: .*line (\d+)", str(exc))
            if first:  # octoDNS's message spans three lines: say it in one
                reason = f"duplicate record: {name or '@'} {rtype_text} is already defined at line {first.group(1)}"
            else:
                reason = " ".join(str(exc).split())
            self.problem(line, name, rtype_text, reason)
            return None
        return record

    def precheck(self, entry: LineDict) -> Iterable[tuple[str, int]]:
        """What octoDNS lets through but a server must not, and shapes octoDNS would fail on unclearly."""
        if "type" not in entry:
            yield "missing type (every record needs one, e.g. type: A)", entry.line
            return
        rtype = entry["type"]
        if not isinstance(rtype, str):
            yield f"type must be a string such as A or MX, got {rtype!r}", entry.line_of("type")
            return
        yield from _unknown(entry, RECORD_KEYS, "key")
        if rtype in UNSERVABLE_TYPES:
            yield f"{rtype} is an octoDNS provider-specific type that a DNS server cannot serve", entry.line
        if "ttl" in entry:
            ttl = entry["ttl"]
            if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
                yield f"ttl must be an integer from 0 to {MAX_TTL}, got {ttl!r}", entry.line_of("ttl")
        dynamic = entry.get("dynamic")
        if dynamic is not None:
            if rtype not in DYNAMIC_TYPES:
                yield f"dynamic is not supported on {rtype} (only on {', '.join(sorted(DYNAMIC_TYPES))})", entry.line_of("dynamic")
            elif not isinstance(dynamic, LineDict):
                yield "dynamic must be a mapping with pools and rules", entry.line_of("dynamic")
            else:
                yield from _dynamic_shape(dynamic)
        octo = entry.get("octodns")
        if octo is not None and not isinstance(octo, LineDict):
            yield "octodns must be a mapping", entry.line_of("octodns")
        elif isinstance(octo, LineDict):
            # other keys are settings of other providers (route53, ns1, ...): theirs to check
            if "healthcheck" in octo:
                yield from _healthcheck_shape(octo["healthcheck"], octo.line_of("healthcheck"), "octodns.healthcheck")
            ours = octo.get("smartdns")
            if ours is not None:
                if not isinstance(ours, LineDict):
                    yield "octodns.smartdns must be a mapping", octo.line_of("smartdns")
                else:
                    yield from _unknown(ours, SMARTDNS_KEYS, "octodns.smartdns key")
                    answers = ours.get("max_answers", 1)
                    if isinstance(answers, bool) or not isinstance(answers, int) or answers < 1:
                        yield f"max_answers must be a positive integer, got {answers!r}", ours.line_of("max_answers")
                    if "healthcheck" in ours:
                        yield from _healthcheck_shape(ours["healthcheck"], ours.line_of("healthcheck"),
                                                      "octodns.smartdns.healthcheck")

    def build(self, records: list[tuple[Any, LineDict]]) -> ZoneData:
        nodes: dict[bytes, dict[int, RRsetSource]] = {}
        digest_items = []
        for record, entry in records:
            owner = dns.name.from_text(record.name, self.origin) if record.name else self.origin
            key = owner.canonicalize().to_wire()
            rdtype = dns.rdatatype.from_text(record._type)
            rrset = record.to_rrset()
            rdatas = [self.rdata(rdtype, text, entry, record) for text in rrset.rdatas]
            if any(r is None for r in rdatas):
                continue
            size = sum(len(r.to_wire()) + RR_OVERHEAD for r in rdatas)
            if size > MAX_RRSET:
                self.problem(entry.line_of("values") if "values" in entry else entry.line, record.name, record._type,
                             f"the values take {size} bytes in wire format, more than a DNS message can carry "
                             f"({MAX_RRSET} with its header, question and OPT)")
                continue
            plain = tuple(PoolValue(text, rdata) for text, rdata in zip(rrset.rdatas, rdatas))
            if getattr(record, "dynamic", None):
                source: RRsetSource = self.dynamic(record, entry, rdtype, plain)
            else:
                rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, rdtype, ttl=record.ttl)
                for rdata in rdatas:
                    rdataset.add(rdata)
                source = StaticRRset(rdataset)
            nodes.setdefault(key, {})[rdtype] = source
            digest_items.append([record.name, record._type, record.ttl, rrset.rdatas, _plain_data(getattr(record, "dynamic", None)), _plain_data(record.octodns)])
        if self.problems:
            raise ZoneLoadError(self.problems)
        self.warn_geo_bypass(records)
        soa, serial = self.soa(nodes, digest_items)
        nodes.setdefault(self.origin.canonicalize().to_wire(), {})[dns.rdatatype.SOA] = StaticRRset(soa)
        names = set()
        for key in nodes:
            name = dns.name.from_wire(key, 0)[0]
            while len(name) >= len(self.origin):
                names.add(name.to_wire())
                name = name.parent()
        return ZoneData(
            origin=self.origin,
            path=self.path,
            nodes=MappingProxyType({k: MappingProxyType(v) for k, v in nodes.items()}),
            soa=soa,
            serial=serial,
            warnings=tuple(self.warnings),
            record_count=len(records),
            names=frozenset(names),
            text=self.origin.to_text(),
            wire=self.origin.canonicalize().to_wire(),
        )

    def rdata(self, rdtype: int, text: str, entry: LineDict, record: Any) -> dns.rdata.Rdata | None:
        line = entry.line_of("value") if "value" in entry else entry.line_of("values")
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=self.origin, relativize=False)
            size = len(rdata.to_wire())
        except Exception as exc:  # dnspython is stricter than octoDNS in places (e.g. SVCB params)
            self.problem(line, record.name, record._type, f"value {_short(text)!r} cannot be encoded: {exc}")
            return None
        if size > MAX_RDATA:  # its RDLENGTH could not be written: every answer with it would fail
            self.problem(line, record.name, record._type,
                         f"value is {size} bytes in wire format, more than the {MAX_RDATA} one record can hold")
            return None
        return rdata

    def dynamic(self, record: Any, entry: LineDict, rdtype: int, plain: tuple[PoolValue, ...]) -> DynamicRRset:
        def value(item: dict) -> PoolValue:
            text = value_to_rdata_text(item["value"])
            rdata = self.rdata(rdtype, text, entry, record)
            return PoolValue(text, rdata, int(item.get("weight", 1)), item.get("status", "obey"))

        pools = {
            pool_id: Pool(pool_id, tuple(value(v) for v in pool.data["values"]), pool.data.get("fallback"))
            for pool_id, pool in record.dynamic.pools.items()
        }
        rules = tuple(
            Rule(
                rule.data["pool"],
                tuple(rule.data.get("geos", ())),
                tuple(ipaddress.ip_network(s, strict=False) for s in rule.data.get("subnets", ())),
            )
            for rule in record.dynamic.rules
        )
        ours = record.octodns.get("smartdns", {}) or {}
        return DynamicRRset(
            name=record.name,
            rdtype=rdtype,
            ttl=record.ttl,
            pools=MappingProxyType(pools),
            rules=rules,
            values=plain,
            max_answers=int(ours.get("max_answers", 1)),
            healthcheck=_healthcheck(record),
        )

    def warn_geo_bypass(self, records: list[tuple[Any, LineDict]]) -> None:
        by_name: dict[str, dict[str, tuple[Any, LineDict]]] = {}
        for record, entry in records:
            by_name.setdefault(record.name, {})[record._type] = (record, entry)
        for name, types in by_name.items():
            a, aaaa = types.get("A"), types.get("AAAA")
            if not (a and aaaa):
                continue
            a_dyn, aaaa_dyn = bool(getattr(a[0], "dynamic", None)), bool(getattr(aaaa[0], "dynamic", None))
            if a_dyn != aaaa_dyn:
                static, kind = (aaaa, "IPv6") if a_dyn else (a, "IPv4")
                self.warnings.append(Problem(
                    self.path, static[1].line, name, static[0]._type,
                    f"A is {'dynamic' if a_dyn else 'static'} but AAAA is {'dynamic' if aaaa_dyn else 'static'}: "
                    f"{kind} senders bypass the geo decision",
                ))

    def soa(self, nodes: dict[bytes, dict[int, RRsetSource]], digest_items: list) -> tuple[dns.rdataset.Rdataset, int]:
        settings = self.soa_settings
        apex = nodes.get(self.origin.canonicalize().to_wire(), {})
        ns = apex.get(dns.rdatatype.NS)
        if settings.mname:
            mname = dns.name.from_text(settings.mname, self.origin)
        elif isinstance(ns, StaticRRset):
            mname = sorted(r.target for r in ns.rdataset)[0]
        else:
            mname = dns.name.from_text("ns1", self.origin)
        rname = dns.name.from_text(settings.rname, self.origin) if settings.rname else dns.name.from_text("hostmaster", self.origin)
        fields = [mname.to_text(), rname.to_text(), settings.refresh, settings.retry, settings.expire, settings.minimum, settings.ttl]
        serial = settings.serial or content_serial(digest_items, fields)
        rdata = dns.rdtypes.ANY.SOA.SOA(
            dns.rdataclass.IN, dns.rdatatype.SOA, mname, rname, serial,
            settings.refresh, settings.retry, settings.expire, settings.minimum,
        )
        rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.SOA, ttl=settings.ttl)
        rdataset.add(rdata)
        return rdataset, serial


def content_serial(records: list, soa_fields: list) -> int:
    """A serial from the zone's content alone, so every server with the same data agrees.

    A hash cannot grow monotonically; nothing here transfers zones by serial,
    and a pinned `serial` in the config is there for those who need one.
    """
    canonical = json.dumps([sorted(records, key=lambda r: (r[0], r[1])), soa_fields], sort_keys=True, default=str)
    serial = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:4], "big")
    return serial or 1


def _plain_data(value: Any) -> Any:
    """octoDNS's internal objects as plain data (for the content hash)."""
    if value is None:
        return None
    if hasattr(value, "_data"):
        return _plain_data(value._data())
    if isinstance(value, dict):
        return {str(k): _plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v) for v in value]
    return value if isinstance(value, (int, float, bool)) else str(value)


def _healthcheck(record: Any) -> HealthCheck | None:
    """Checks are opt-in: only records that carry `octodns.healthcheck` (or ours) are probed."""
    octo = record.octodns or {}
    ours = (octo.get("smartdns") or {}).get("healthcheck") or {}
    theirs = octo.get("healthcheck")
    if theirs is None and not ours:
        return None
    merged = {**(theirs or {}), **ours}
    protocol = merged.get("protocol", "HTTPS")
    default_port = {"HTTPS": 443, "HTTP": 80, "SMTP": 25}.get(protocol, 443)
    return HealthCheck(
        protocol=protocol,
        port=int(merged.get("port", default_port)),
        path=str(merged.get("path", "/_dns")),
        host=merged.get("host") or record.fqdn.rstrip("."),
    )


def _dynamic_shape(dynamic: LineDict) -> Iterable[tuple[str, int]]:
    """Unknown keys and wrong shapes in `dynamic` (octoDNS would fail on them with a bare TypeError)."""
    yield from _unknown(dynamic, DYNAMIC_KEYS, "dynamic key")
    pools = dynamic.get("pools")
    if pools is not None and not isinstance(pools, LineDict):
        yield "dynamic pools must be a mapping of pool names to pools", dynamic.line_of("pools")
    elif pools is not None:
        for pool_id, pool in pools.items():
            if not isinstance(pool, LineDict):
                yield f"pool {pool_id!r} must be a mapping with values", pools.line_of(pool_id)
                continue
            yield from _unknown(pool, POOL_KEYS, "pool key")
            values = pool.get("values")
            if values is not None and not isinstance(values, list):
                yield f"pool {pool_id!r}: values must be a list of mappings with a value", pool.line_of("values")
                continue
            for value in values or []:
                if isinstance(value, LineDict):
                    yield from _unknown(value, POOL_VALUE_KEYS, "pool value key")
                else:
                    yield f"pool {pool_id!r}: each value must be a mapping with a value, got {value!r}", pool.line_of("values")
    rules = dynamic.get("rules")
    if rules is not None and not isinstance(rules, list):
        yield "dynamic rules must be a list", dynamic.line_of("rules")
    elif rules is not None:
        for index, rule in enumerate(rules, 1):
            if isinstance(rule, LineDict):
                yield from _unknown(rule, RULE_KEYS, "rule key")
            else:
                yield f"rule {index} must be a mapping with a pool, got {rule!r}", dynamic.line_of("rules")


def _healthcheck_shape(check: Any, line: int, what: str) -> Iterable[tuple[str, int]]:
    """A health check smartdns can run: the prober would otherwise fail at run time, not here."""
    if not isinstance(check, LineDict):
        yield f"{what} must be a mapping", line
        return
    yield from _unknown(check, HEALTHCHECK_KEYS, "healthcheck key")
    if "protocol" in check and check["protocol"] not in HEALTH_PROTOCOLS:
        yield (f"healthcheck protocol must be one of {', '.join(sorted(HEALTH_PROTOCOLS))}, got {check['protocol']!r}",
               check.line_of("protocol"))
    port = check.get("port", 1)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        yield f"healthcheck port must be an integer from 1 to 65535, got {port!r}", check.line_of("port")
    path = check.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        yield f"healthcheck path must be a string starting with /, got {path!r}", check.line_of("path")
    host = check.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        yield f"healthcheck host must be a host name, got {host!r}", check.line_of("host")


def _short(text: str, limit: int = 80) -> str:
    """A value as quoted in a message: long values cut, so that one error stays one readable line."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _unknown(mapping: LineDict, known: frozenset[str], what: str) -> Iterable[tuple[str, int]]:
    for key in mapping:
        if key not in known:
            yield f"unknown {what} {key!r} (known: {', '.join(sorted(known))})", mapping.line_of(key)


def _with_context(data: dict, entry: LineDict) -> LineDict:
    out = LineDict(data)
    out.line, out.key_lines, out.context = entry.line, entry.key_lines, entry.context
    return out


def _reason_line(reason: str, entry: LineDict) -> int:
    """Point at the rule or pool an octoDNS reason talks about, where we can tell."""
    dynamic = entry.get("dynamic")
    if isinstance(dynamic, LineDict):
        words = reason.split()
        if len(words) > 1 and words[0] == "rule" and words[1].isdigit():
            rules = dynamic.get("rules")
            index = int(words[1]) - 1
            if isinstance(rules, list) and 0 <= index < len(rules) and isinstance(rules[index], LineDict):
                return rules[index].line
        pools = dynamic.get("pools")
        if isinstance(pools, LineDict):
            # 'invalid weight "0" in pool "one" value 1': the line of that weight
            match = re.search(r'(\w+) "[^"]*" in pool "([^"]+)" value (\d+)', reason)
            if match and isinstance(pools.get(match.group(2)), LineDict):
                values = pools[match.group(2)].get("values")
                index = int(match.group(3)) - 1
                if isinstance(values, list) and 0 <= index < len(values) and isinstance(values[index], LineDict):
                    return values[index].line_of(match.group(1))
            loop = re.match(r"loop in pool fallbacks: (\S+)", reason)  # at the fallback that starts it
            if loop and isinstance(pools.get(loop.group(1)), LineDict):
                return pools[loop.group(1)].line_of("fallback")
            if "pool" in reason:
                for pool_id in pools:
                    if f'"{pool_id}"' in reason:
                        return pools.line_of(pool_id)
            # a bad value quoted in the reason ('invalid IPv4 address "192.0.2.300"'): the pool value saying it
            for pool in pools.values():
                values = pool.get("values") if isinstance(pool, LineDict) else None
                for value in values if isinstance(values, list) else ():
                    if isinstance(value, LineDict) and f'"{value.get("value")}"' in reason:
                        return value.line_of("value")
    for key in ("values", "value", "ttl", "dynamic"):
        if key in reason and key in entry:
            return entry.line_of(key)
    for key in ("value", "values"):  # a reason that quotes the bad value but names no key
        items = entry.get(key)
        if any(f'"{item}"' in reason for item in (items if isinstance(items, list) else [items])):
            return entry.line_of(key)
    return entry.line
