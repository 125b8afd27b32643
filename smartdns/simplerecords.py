"""The records most of a big zone is made of, checked without octoDNS.

octoDNS's `Record.new` costs ~110 us a record (validators, value objects, the
zone's bookkeeping). Most records of a big zone are plain A, AAAA, TXT and MX
records whose every part can be seen to be valid at a glance. For those,
`SimpleRecords.specs` returns what the octoDNS adapter would have produced; for
anything else (a key it does not know, a value in a form it does not
recognise, a name in a CNAME's node...) it returns None and the record goes
through octoDNS, which also gives the errors. It accepts a subset of what
octoDNS accepts and produces the same spec (tests/test_simplerecords.py checks
both against octoDNS on generated records).

Zone-wide rules octoDNS checks across records are kept by the caller, which
sends through octoDNS every record they could concern (`SimpleRecords`):
records sharing a node with a CNAME, two records of one type at one name,
MX and NS records whose target is a CNAME of the zone, every record of a zone with
a DNAME (occlusion).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

from .yamlfile import LineDict
from .zonebuild import RecordSpec
from .zoneshape import DYNAMIC_TYPES, MAX_TTL

SIMPLE_TYPES = frozenset({"A", "AAAA", "TXT", "MX", "NS"})
_NOTHING: dict[str, Any] = {}  # an empty mapping in every digest, only ever read (as JSON)
_RECORD_KEYS = frozenset({"type", "ttl", "value", "values"})
# A relative name octoDNS takes as it is: lower-case LDH and '_' labels of 1-63, a leading '*' label
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"(?:\*|{_LABEL})(?:\.{_LABEL})*")
# A target octoDNS takes (its FQDN check wants two labels at least), absolute
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})+\.")
# Printable ASCII without the characters octoDNS escapes or checks (quote, backslash, ';'): one chunk
_TXT = re.compile(r"[\x20-\x21\x23-\x3a\x3c-\x5b\x5d-\x7e]{1,255}")


class SimpleRecords:
    """Which records of one zone file may skip octoDNS, from a first look at the whole file."""

    def __init__(self, data: LineDict, origin: str, default_ttl: int) -> None:
        self.origin = origin  # "example.com."
        self.default_ttl = default_ttl
        self.cname_names: set[str] = set()
        self.enabled = True
        for name, entries in data.items():
            for entry in entries if isinstance(entries, list) else (entries,):
                rtype = entry.get("type") if isinstance(entry, LineDict) else None
                if rtype == "CNAME" and isinstance(name, str):
                    self.cname_names.add(name.lower())
                elif rtype == "DNAME":
                    self.enabled = False  # what a DNAME occludes is octoDNS's to say, record by record

    def specs(self, name: Any, entries: Any) -> list[RecordSpec] | None:
        """Every record of this name as specs, or None: the name goes through octoDNS."""
        if not self.enabled or not isinstance(name, str) or name in self.cname_names or not _is_name(name, self.origin):
            return None
        if isinstance(entries, LineDict):  # one record at this name (most names): the same as a list of one
            rtype = entries.get("type")
            if type(rtype) is not str or rtype not in SIMPLE_TYPES:
                return None
            spec = self.spec(name, entries)
            return None if spec is None else [spec]
        listed = entries if isinstance(entries, list) else [entries]
        if not listed or not all(isinstance(e, LineDict) for e in listed):
            return None
        types = [e.get("type") for e in listed]
        if not all(type(t) is str and t in SIMPLE_TYPES for t in types) or len(set(types)) != len(types):
            return None  # other types, or two records of one type: octoDNS names the duplicate
        specs = []
        for entry in listed:
            spec = self.spec(name, entry)
            if spec is None:
                return None
            specs.append(spec)
        return specs

    def spec(self, name: str, entry: LineDict) -> RecordSpec | None:
        rtype = entry["type"]
        if not _RECORD_KEYS.issuperset(entry):
            return None
        ttl = entry.get("ttl", self.default_ttl)
        if type(ttl) is not int or not 0 <= ttl <= MAX_TTL:
            return None
        if ("value" in entry) == ("values" in entry):
            return None
        written = entry["values"] if "values" in entry else entry["value"]
        items = written if isinstance(written, list) else [written]
        if not items:
            return None
        found = _texts(rtype, items, self)
        if found is None:
            return None
        texts, size = found
        # the content-serial digest as the adapter makes it from octoDNS's record (JSON reads a tuple as the
        # list it has there): types that can be dynamic carry an empty `dynamic` there, the others none
        digest = (name, rtype, ttl, texts, _NOTHING if rtype in DYNAMIC_TYPES else None, _NOTHING)
        return RecordSpec(name, rtype, ttl, texts, entry, None, digest, size)

    def target_is_cname(self, target: str) -> bool:
        """An MX or NS target that is a CNAME of this zone (octoDNS's mx/ns-target-not-cname say so)."""
        if target == self.origin:
            return "" in self.cname_names
        return target.endswith("." + self.origin) and target[: -len(self.origin) - 1] in self.cname_names

    def target(self, value: Any) -> bool:
        return type(value) is str and _HOST.fullmatch(value) is not None and len(value) <= 254 \
            and not self.target_is_cname(value)


def _is_ipv4(text: str) -> bool:
    """An IPv4 address in dotted-quad form without leading zeros (what octoDNS takes as written): the C
    library's parser says so in a third of the time of a pattern (tests compare both)."""
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return False
    return True


def _is_ipv6(text: str) -> bool:
    """An IPv6 address in the form octoDNS writes it back in (Python's: lower case, the longest run of two
    zero groups or more shortened, the first of equal runs; no embedded IPv4 form, no scope); the C library
    writes the same form twenty times faster than `ipaddress` (tests compare both)."""
    if "." in text or "%" in text:
        return False  # Python never writes an address so (a scope, fd00::1%eth0, is not one to DNS)
    try:
        written = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):
        return False
    if "." in written:  # ::1:fd00, ::ffff:a00:1: the C library writes the last 32 bits as IPv4, Python does not
        return str(ipaddress.IPv6Address(text)) == text
    return written == text


def _is_name(name: str, origin: str) -> bool:
    if name == "":
        return True
    return _NAME.fullmatch(name) is not None and len(name) + 1 + len(origin) <= 253


def _texts(rtype: str, items: list[Any], zone: SimpleRecords) -> tuple[tuple[str, ...], int] | None:
    """The values as octoDNS renders them (sorted as it sorts them) and their wire size, or None."""
    if rtype == "A":
        for value in items:
            if type(value) is not str or not _is_ipv4(value):
                return None
        return (items[0],) if len(items) == 1 else tuple(sorted(items)), 4 * len(items)
    if rtype == "AAAA":
        for value in items:
            if type(value) is not str or not _is_ipv6(value):
                return None
        return (items[0],) if len(items) == 1 else tuple(sorted(items)), 16 * len(items)
    if rtype == "TXT":
        if not all(type(v) is str and _TXT.fullmatch(v) for v in items):
            return None
        return tuple(f'"{v}"' for v in sorted(items)), sum(len(v) + 1 for v in items)
    # a name's wire form is one byte longer than its text with the final dot
    if rtype == "NS":
        if not all(zone.target(v) for v in items):
            return None
        return tuple(sorted(items)), sum(len(v) + 1 for v in items)
    pairs = []  # MX
    for value in items:
        if not isinstance(value, LineDict) or set(value) != {"exchange", "preference"}:
            return None
        preference, exchange = value["preference"], value["exchange"]
        if type(preference) is not int or not 0 <= preference <= 65535:
            return None
        if not zone.target(exchange):
            return None
        pairs.append((preference, exchange))
    return tuple(f"{p} {e}" for p, e in sorted(pairs)), sum(2 + len(e) + 1 for _, e in pairs)
