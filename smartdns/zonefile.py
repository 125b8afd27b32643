"""octoDNS YAML zone files -> immutable `ZoneData`: the only module that imports octodns.

The adapter between octoDNS and smartdns: the YAML is read with line numbers
(yamlfile.py), each record's shape is checked (zoneshape.py), octoDNS validates
the records (`Record.new`, `Zone.validate`), and what it accepted is handed on as
plain data to the model builder (zonebuild.py). Every problem names file, line,
record and reason; `_reason_line` finds the line in octoDNS's own messages
(tests/test_zonefile.py pins the ones it parses).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import dns.exception
import dns.name
import octodns.zone.base as _zone_module
from octodns.record import Record
from octodns.record.base import value_to_rdata_text
from octodns.record.dynamic import _DynamicMixin
from octodns.record.exception import ValidationError as RecordValidationError
from octodns.record.geo_data import geo_data
from octodns.record.validator import ValidationReason
from octodns.yaml import NaturalSortEnforcingLoader
from octodns.zone import Zone
from octodns.zone.exception import ValidationError as ZoneValidationError

from .config import SoaSettings
from .model import HealthCheck, Problem, ZoneData, ZoneLoadError
from .rule_subnets import linear
from .simplerecords import SimpleRecords
from .yamlfile import LineDict, YamlError, load_file
from .zonebuild import DynamicSpec, PoolSpec, RecordSpec, ZoneBuilder
from .zoneshape import absolute_name_reason, record_shape

__all__ = ["CONTINENT_OF", "COUNTRY_NAMES", "Problem", "ZoneData", "ZoneLoadError", "load_zone", "zone_name_for"]

log = logging.getLogger(__name__)

# octoDNS's default validators, plus the zone checks that matter for serving:
# loops and CNAME clashes would otherwise reach resolvers (RFC 1034 3.6.2, RFC 2181 10.3).
Record.enable_validators(["legacy"])
# octoDNS compares every rule subnet with every one before it (145 s for 10,000): same checks, linear
_DynamicMixin._validate_rules = classmethod(linear(_DynamicMixin._validate_rules.__func__, ValidationReason))
Zone.enable_zone_validators(["legacy"])
for _validator in ("no-cname-loop", "root-cname", "dname-coexistence", "mx-target-not-cname",
                   "ns-target-not-cname", "srv-target-not-cname"):
    Zone.enable_zone_validator(_validator)


class _CompiledWhenUsed:
    """A pattern compiled the first time it is used. octoDNS's `Zone` compiles two patterns with the zone's
    name when made (a tenth of a small zone's load, as 1,000 zones overflow `re`'s cache), for a lookup
    (`hostname_from_fqdn`) that most zones never make."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


class _ReCompilingWhenUsed:
    """`re` for octoDNS's zone module, whose only use of it is those two patterns."""

    compile = _CompiledWhenUsed

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


if _zone_module.re is re:
    _zone_module.re = _ReCompilingWhenUsed()

DEFAULT_TTL = 3600  # octoDNS YamlProvider's default_ttl
# A zone file bigger than this is refused unread: YAML costs many times its size in memory,
# and a runaway generator must not take a serving process down with it.
MAX_ZONE_BYTES = 64 * 1024 * 1024

# Country -> continent as octoDNS knows it, so that a geo "AS" means what octoDNS means.
CONTINENT_OF: Mapping[str, str] = MappingProxyType(
    {country: continent for continent, countries in geo_data.items() for country in countries}
)
COUNTRY_NAMES: Mapping[str, str] = MappingProxyType(
    {country: info["name"] for countries in geo_data.values() for country, info in countries.items()}
)


def zone_name_for(path: Path) -> str:
    """`zones/example.com.yaml` serves `example.com.`."""
    return path.name[: -len(".yaml")].lower().rstrip(".") + "."


def load_zone(path: str | Path, soa: SoaSettings, fast: bool = True) -> ZoneData:
    """Load and validate one zone file; raises ZoneLoadError listing every problem found.

    `fast=False` sends every record through octoDNS (simplerecords.py is skipped): for tests
    that compare the two."""
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
        zone = _Loader(where, origin, soa, fast).load(data)
        order = key_order_warning(data, where)
        return zone if order is None else replace(zone, warnings=(order, *zone.warnings))
    except ZoneLoadError:
        raise
    except Exception as exc:  # a shape no check foresaw: this zone fails to load, the server goes on
        log.debug("loading %s", where, exc_info=True)
        raise ZoneLoadError([Problem(where, 1, "", "", f"cannot load the zone ({type(exc).__name__}: {exc})")]) from None


_NATSORT = NaturalSortEnforcingLoader.KEYGEN  # natural sort, as octoDNS's YamlProvider enforces
_DIGITS = re.compile(r"(\d+)")


@functools.lru_cache(maxsize=4096, typed=True)  # keys repeat (type, ttl, values...; zones' own names)
def _octodns_key_order(key: Any) -> Any:
    """natsort's key (what octoDNS sorts by), written out for ASCII text: natsort's costs ~10 us a key,
    and a big zone has one key per record (tests/test_zonefile.py compares the two orders)."""
    if type(key) is not str or not key.isascii():
        return _NATSORT(key)
    prefix = key.rstrip("0123456789")
    if prefix.isalpha():  # letters, then digits or not: most names ('host12' -> ('host', 12))
        return (prefix, int(key[len(prefix):])) if len(prefix) < len(key) else (key,)
    parts: list[Any] = _DIGITS.split(key)
    parts[1::2] = map(int, parts[1::2])
    if parts[-1] == "":
        parts.pop()  # natsort drops the empty text after a final number ('host10' -> ('host', 10))
    return tuple(parts)


def key_order_warning(data: LineDict, path: str) -> Problem | None:
    """The first mapping whose keys octoDNS's YamlProvider would refuse (`enforce_order`, on by default).

    smartdns reads any order, but `octodns-validate` and `octodns-sync` would fail on the file: say it
    here, with the fix, rather than in the admin's next octoDNS run.
    """
    return _first_out_of_order(data, data, "", "", path)


def _first_out_of_order(node: Any, data: LineDict, name: str, rtype: str, path: str) -> Problem | None:
    """key_order_warning's walk, a function of its own: a nested function that calls itself is a reference
    cycle, and one holding the file's data would leave all of it to the garbage collector."""
    if isinstance(node, list):
        for item in node:
            if isinstance(item, (list, LineDict)):  # (the walk looks into nothing else)
                found = _first_out_of_order(item, data, name, rtype, path)
                if found is not None:
                    return found
        return None
    if not isinstance(node, LineDict):
        return None
    rtype = node["type"] if isinstance(node.get("type"), str) else rtype
    for key, value in node.items():  # inner mappings first, as octoDNS's loader meets them
        if isinstance(value, (list, LineDict)):
            found = _first_out_of_order(value, data, str(key) if node is data else name, rtype, path)
            if found is not None:
                return found
    if len(node) < 2:
        return None
    keys = tuple(node)
    misplaced = _misplaced(keys) if len(keys) <= 8 else _misplaced.__wrapped__(keys)
    if misplaced is None:
        return None
    expected, got = misplaced
    shown = [repr(k) if k == "" else str(k) for k in (expected, got)]
    return Problem(path, node.line_of(got), name if node is not data else "", "" if node is data else rtype,
                   f"keys out of order for octoDNS: {shown[0]} must come before {shown[1]} (octoDNS's "
                   f"YamlProvider refuses this by default): sort the keys, or set enforce_order: false "
                   f"in its provider config")


@functools.lru_cache(maxsize=1024)  # a record's keys: the same few tuples over and over
def _misplaced(keys: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """The first key out of octoDNS's order (the key that belongs there, the key found), or None."""
    for got, expected in zip(keys, sorted(keys, key=_octodns_key_order)):
        if got != expected:
            return expected, got
    return None


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
    def __init__(self, path: str, origin: dns.name.Name, soa: SoaSettings, fast: bool = True) -> None:
        self.fast = fast  # plain records skip octoDNS (False: every record through it, for comparing)
        self.path = path
        self.origin = origin
        self.origin_text = origin.to_text()
        self.soa_settings = soa
        self.problems: list[Problem] = []
        self._zone: Zone | None = None  # made when the first record needs octoDNS (it costs ~0.3 ms a zone)

    @property
    def zone(self) -> Zone:
        if self._zone is None:
            self._zone = Zone(self.origin_text, [])
        return self._zone

    def problem(self, line: int, name: str, rtype: str, reason: str) -> None:
        self.problems.append(Problem(self.path, line, name, rtype, reason))

    def load(self, data: LineDict) -> ZoneData:
        records: list[tuple[Any, LineDict]] = []
        ordered: list[RecordSpec | int] = []  # in file order: specs made here, or an index into `records`
        simple = SimpleRecords(data, self.origin_text, DEFAULT_TTL) if self.fast else None
        for name, entries in data.items():
            specs = simple.specs(name, entries) if simple is not None else None
            if specs is not None:  # plain records that need no octoDNS (simplerecords.py)
                ordered.extend(specs)
                continue
            line = data.line_of(name)
            if not isinstance(name, str):
                self.problem(line, str(name), "", "record name must be a string")
                continue
            if name.endswith("."):
                self.problem(line, name, "", absolute_name_reason(name, self.origin))
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
                    ordered.append(len(records))
                    records.append((record, entry))
        if not self.problems and self._zone is not None:
            try:
                self.zone.validate()
            except ZoneValidationError as exc:
                entries_of = {id(record): entry for record, entry in records}
                for reason in exc.reasons:
                    self.zone_problem(reason, entries_of)
        apex_ns = any(r._type == "NS" and r.name == "" for r, _ in records) or \
            any(isinstance(item, RecordSpec) and item.rtype == "NS" and item.name == "" for item in ordered)
        if not self.problems and not apex_ns:
            self.problem(1, "", "NS", "the zone has no NS records at its apex")
        if self.problems:
            raise ZoneLoadError(self.problems)
        builder = ZoneBuilder(self.path, self.origin, self.soa_settings)
        return builder.build([item if isinstance(item, RecordSpec) else _spec(*records[item]) for item in ordered])

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
        for reason, at in record_shape(entry):
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

def _spec(record: Any, entry: LineDict) -> RecordSpec:
    """What octoDNS accepted, as plain data for the model builder."""
    dynamic = getattr(record, "dynamic", None)
    spec = None
    if dynamic:
        pools = tuple(
            PoolSpec(pool_id, tuple((value_to_rdata_text(v["value"]), int(v.get("weight", 1)), v.get("status", "obey"))
                                    for v in pool.data["values"]), pool.data.get("fallback"))
            for pool_id, pool in dynamic.pools.items()
        )
        rules = tuple((rule.data["pool"], tuple(rule.data.get("geos", ())), tuple(rule.data.get("subnets", ())))
                      for rule in dynamic.rules)
        ours = record.octodns.get("smartdns", {}) or {}
        spec = DynamicSpec(pools, rules, int(ours.get("max_answers", 1)), _healthcheck(record))
    texts = record.to_rrset().rdatas
    digest = [record.name, record._type, record.ttl, texts, _plain_data(dynamic), _plain_data(record.octodns)]
    return RecordSpec(record.name, record._type, record.ttl, tuple(texts), entry, spec, digest)


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


def _with_context(data: dict[str, Any], entry: LineDict) -> LineDict:
    out = LineDict(data)
    out.line, out.key_lines, out.path = entry.line, entry.key_lines, entry.path
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
                return int(rules[index].line)
        pools = dynamic.get("pools")
        if isinstance(pools, LineDict):
            # 'invalid weight "0" in pool "one" value 1': the line of that weight
            match = re.search(r'(\w+) "[^"]*" in pool "([^"]+)" value (\d+)', reason)
            if match and isinstance(pools.get(match.group(2)), LineDict):
                values = pools[match.group(2)].get("values")
                index = int(match.group(3)) - 1
                if isinstance(values, list) and 0 <= index < len(values) and isinstance(values[index], LineDict):
                    return int(values[index].line_of(match.group(1)))
            loop = re.match(r"loop in pool fallbacks: (\S+)", reason)  # at the fallback that starts it
            if loop and isinstance(pools.get(loop.group(1)), LineDict):
                return int(pools[loop.group(1)].line_of("fallback"))
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
