"""Shape checks of a zone file's records, before octoDNS sees them.

What octoDNS lets through but a server must not (unknown keys, `dynamic` on
types without dynamic support, TTLs that are not integers, health checks we
cannot run), and shapes octoDNS would fail on with a bare TypeError. Each check
yields (reason, line); zonefile.py turns them into problems of the record.
"""

from __future__ import annotations

from typing import Any, Iterable

import dns.exception
import dns.name

from .yamlfile import LineDict

MAX_TTL = 2**31 - 1  # RFC 2181 8
DYNAMIC_TYPES = frozenset({"A", "AAAA", "CNAME", "DNAME"})
# octoDNS pseudo types that no DNS server can answer as such
UNSERVABLE_TYPES = frozenset({"ALIAS", "URLFWD"})
RECORD_KEYS = frozenset({"type", "ttl", "value", "values", "dynamic", "octodns"})
DYNAMIC_KEYS = frozenset({"pools", "rules"})
POOL_KEYS = frozenset({"fallback", "values"})
POOL_VALUE_KEYS = frozenset({"value", "weight", "status"})
RULE_KEYS = frozenset({"geos", "pool", "subnets"})
HEALTHCHECK_KEYS = frozenset({"host", "path", "port", "protocol"})
SMARTDNS_KEYS = frozenset({"max_answers", "healthcheck"})
HEALTH_PROTOCOLS = frozenset({"TCP", "HTTP", "HTTPS", "SMTP"})
# types whose values name a host: the field holding it in a mapping value ("" for plain string values)
TARGET_FIELDS = {"MX": "exchange", "SRV": "target", "NS": "", "CNAME": "", "DNAME": "", "PTR": ""}


def record_shape(entry: LineDict) -> Iterable[tuple[str, int]]:
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
    yield from _target_dots(entry, rtype)
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


def _target_dots(entry: LineDict, rtype: str) -> Iterable[tuple[str, int]]:
    """Targets must be absolute: `mx.example.com` without its dot would be served as
    `mx.example.com.example.com.` and mail would silently go nowhere."""
    field = TARGET_FIELDS.get(rtype)
    if field is None:
        return
    places: list[tuple[Any, int]] = []  # (value as written, line)
    for key in ("value", "values"):
        if key not in entry:
            continue
        written = entry[key]
        line = entry.line_of(key)
        for item in written if isinstance(written, list) else [written]:
            places.append((item, getattr(item, "line", line)))
    pools = entry.get("dynamic", {}).get("pools") if isinstance(entry.get("dynamic"), LineDict) else None
    for pool in pools.values() if isinstance(pools, LineDict) else ():
        for value in pool.get("values") or [] if isinstance(pool, LineDict) else ():
            if isinstance(value, LineDict) and "value" in value:
                places.append((value["value"], value.line_of("value")))
    for item, line in places:
        target, what = item, "value"
        if field and isinstance(item, LineDict):
            target = item.get(field, item.get("value"))
            what = field
            line = item.line_of(field) if field in item else line
        if not isinstance(target, str) or not target or target.endswith(".") or "{" in target:
            continue  # other shapes are octoDNS's to reject
        yield f"{rtype} {what} {target!r} missing trailing dot: write {target}.", line


def absolute_name_reason(name: str, origin: dns.name.Name) -> str:
    """Why a name ending in a dot is refused: octoDNS names are relative to the zone (it would
    read `foo.other.org.` as `foo.other.org..example.com.`, an invalid name)."""
    try:
        absolute = dns.name.from_text(name)
    except dns.exception.DNSException:
        return f"record names are relative to the zone {origin}, and {name!r} ends with a dot"
    if absolute.is_subdomain(origin):
        relative = absolute.relativize(origin).to_text()
        hint = "''" if relative == "@" else repr(relative)
        return f"record names are relative to the zone: write {hint} for {absolute}, without the zone and the dot"
    return f"{absolute} is outside the zone {origin}: a zone file holds only names in its zone, relative to it"


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


def _unknown(mapping: LineDict, known: frozenset[str], what: str) -> Iterable[tuple[str, int]]:
    for key in mapping:
        if key not in known:
            yield f"unknown {what} {key!r} (known: {', '.join(sorted(known))})", mapping.line_of(key)
