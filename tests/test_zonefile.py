"""The octoDNS messages smartdns reads: pinned, so an octoDNS upgrade that rewords one fails here
instead of silently losing the line a problem is reported at.

`zonefile._reason_line` finds the line of an octoDNS reason by its words (`rule N`, `... in pool
"P" value N`, `loop in pool fallbacks: P`, a quoted pool name, a quoted bad value), and a
duplicate record's line by `existing: ... line N`. Each case below is one of those shapes; the
expected line is where an admin must look.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from smartdns.config import SoaSettings
from smartdns.zonefile import ZoneLoadError, load_zone

DYNAMIC_ZONE = """\
---
'':
  - type: NS
    values: [ns1.example.com.]
a:
  dynamic:
    pools:
      one:
        fallback: two
        values:
          - value: 192.0.2.1
            weight: 0
      two:
        fallback: one
        values:
          - value: 192.0.2.300
      unused:
        values:
          - value: 192.0.2.3
    rules:
      - geos: [XX-YY]
        pool: one
      - pool: nowhere
  ttl: 60
  type: A
  values: [192.0.2.1]
b:
  type: A
  values: [192.0.2.999]
c:
  type: A
  value: 1.2.3
d:
  type: MX
  values:
    - exchange: mx.example.com.
"""

RECORD_ZONE = """\
---
'':
  - type: NS
    values: [ns1.example.com.]
b:
  - type: A
    value: 192.0.2.1
  - type: A
    value: 192.0.2.2
c:
  type: BOGUS
  value: x
"""


def problems(tmp_path: Path, text: str) -> list[tuple[int, str, str, str]]:
    path = tmp_path / "example.com.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ZoneLoadError) as caught:
        load_zone(path, SoaSettings())
    return [(p.line, p.name, p.rtype, p.reason) for p in caught.value.problems]


def test_dynamic_reasons_point_at_the_pool_rule_or_value(tmp_path):
    assert problems(tmp_path, DYNAMIC_ZONE) == [
        (12, "a", "A", 'invalid weight "0" in pool "one" value 1, via: dynamic'),  # the weight's line
        (8, "a", "A", 'pool "one" has single value with weight!=1, via: dynamic'),  # the pool's line
        (9, "a", "A", "loop in pool fallbacks: one -> two, via: dynamic"),  # the fallback starting it
        (16, "a", "A", 'invalid IPv4 address "192.0.2.300", via: ip-value-rfc'),  # the pool value
        (14, "a", "A", "loop in pool fallbacks: two -> one, via: dynamic"),
        (21, "a", "A", 'rule 1 unknown continent code "XX-YY", via: dynamic'),  # the rule
        (23, "a", "A", 'rule 2 undefined pool "nowhere", via: dynamic'),
        (17, "a", "A", 'unused pools: "unused", via: dynamic'),
        (29, "b", "A", 'invalid IPv4 address "192.0.2.999", via: ip-value-rfc'),  # `values`
        (32, "c", "A", 'invalid IPv4 address "1.2.3", via: ip-value-rfc'),  # `value`
        (34, "d", "MX", "missing preference, via: mx-value"),  # the record
    ]


def test_duplicate_and_unknown_type_messages_stay_one_line(tmp_path):
    assert problems(tmp_path, RECORD_ZONE) == [
        (8, "b", "A", "duplicate record: b A is already defined at line 6"),
        (11, "c", "BOGUS", 'Unknown record type: "BOGUS"'),
    ]


def test_key_order_is_natsorts_for_ascii_keys() -> None:
    """The written-out natural key equals natsort's (octoDNS's order) on ASCII keys of every shape."""
    import random

    from octodns.yaml import NaturalSortEnforcingLoader

    from smartdns.zonefile import _octodns_key_order

    rng = random.Random(5)
    alphabet = "ab-_.*0123456789 Z"
    for _ in range(5000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        assert _octodns_key_order(key) == NaturalSortEnforcingLoader.KEYGEN(key), key


def test_octodns_zone_patterns_compiled_when_used_find_the_same_hostnames() -> None:
    """octoDNS's `Zone` gets its two name patterns compiled on first use (zonefile.py): the hostnames
    it finds are those the patterns, compiled at once, find."""
    import re

    from octodns.zone import Zone

    for zone_name in ("example.com.", "xn--bcher-kva.example.", "a-b.example.org."):
        zone = Zone(zone_name, [])
        eager = re.compile(rf"\.?{zone.name}?$")
        for fqdn in (f"www.{zone_name}", zone_name, f"a.b.{zone_name}", "www.other.net.", f"x{zone_name}",
                     zone_name.rstrip(".")):
            assert zone.hostname_from_fqdn(fqdn) == eager.sub("", fqdn), fqdn


@pytest.mark.parametrize("dynamic", [False, True], ids=["plain", "with-octodns-record"])
def test_a_load_leaves_its_yaml_to_reference_counting_not_the_collector(tmp_path, dynamic: bool) -> None:
    """The file's parsed data is freed when the load returns: a reference cycle holding it (a nested
    function that called itself did) leaves a 50,000-record file's tree to a collection that walks it."""
    import gc

    from smartdns.yamlfile import LineDict

    text = "'':\n  type: NS\n  values: [ns1.example.com., ns2.example.com.]\n" + "".join(
        f"host{i}:\n  type: A\n  value: 10.0.0.{i}\n" for i in range(1, 50))
    if dynamic:  # octoDNS's own zone and records are cycles: those alone may be left to the collector
        text += ("mx:\n  dynamic:\n    pools:\n      one:\n        values:\n        - value: 10.9.0.1\n"
                 "    rules:\n    - pool: one\n  type: A\n  value: 10.9.0.1\n")
    path = tmp_path / "example.com.yaml"
    path.write_text(text)
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        zone = load_zone(path, SoaSettings())
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
        assert not any(isinstance(o, LineDict) for o in gc.garbage), left
        if not dynamic:
            assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()
    assert len(zone.nodes) == 50 + dynamic


def reference_key_order_warning(data, path):
    """key_order_warning as first written (every key through natsort, every mapping sorted): the reference
    for the cached, shortcut walk."""
    from octodns.yaml import NaturalSortEnforcingLoader

    from smartdns.model import Problem
    from smartdns.yamlfile import LineDict

    def walk(node, name, rtype):
        if isinstance(node, list):
            for item in node:
                found = walk(item, name, rtype)
                if found is not None:
                    return found
            return None
        if not isinstance(node, LineDict):
            return None
        rtype = node["type"] if isinstance(node.get("type"), str) else rtype
        for key, value in node.items():
            found = walk(value, str(key) if node is data else name, rtype)
            if found is not None:
                return found
        keys = list(node)
        for got, expected in zip(keys, sorted(keys, key=NaturalSortEnforcingLoader.KEYGEN)):
            if got != expected:
                shown = [repr(k) if k == "" else str(k) for k in (expected, got)]
                return Problem(path, node.line_of(got), name if node is not data else "", "" if node is data else rtype,
                               f"keys out of order for octoDNS: {shown[0]} must come before {shown[1]} (octoDNS's "
                               f"YamlProvider refuses this by default): sort the keys, or set enforce_order: false "
                               f"in its provider config")
        return None

    return walk(data, "", "")


@pytest.mark.parametrize("seed", range(3))
def test_key_order_warning_is_the_plain_walks(seed: int) -> None:
    """The first key out of octoDNS's order, found with cached orders: what sorting every mapping finds."""
    import random

    import yaml

    from smartdns.yamlfile import load_text
    from smartdns.zonefile import key_order_warning

    rng = random.Random(seed)
    names = ["", "www", "host1", "host2", "host10", "host9", "Host3", "mx", "mx2", "a-b", "a.b", "_dmarc", "*", "x1y2",
             "01", "1", "é"]
    outcomes = set()
    for _ in range(300):
        zone = {}
        for _ in range(rng.randint(1, 14)):
            record = {"type": rng.choice(["A", "MX", "TXT"]), "ttl": 60, "value": "v"}
            if rng.random() < 0.3:
                record["values"] = [{"preference": 10, "exchange": "mx."}, {"exchange": "b.", "preference": 5}]
            if rng.random() < 0.2:
                record["dynamic"] = {"rules": [{"pool": "a", "subnets": ["10.0.0.0/8"]}], "pools": {"b": {}, "a": {}}}
            keys = list(record)
            if rng.random() < 0.7:
                keys.sort()
            zone[rng.choice(names)] = {key: record[key] for key in keys}
        keys = list(zone)
        if rng.random() < 0.5:
            from smartdns.zonefile import _octodns_key_order
            keys.sort(key=_octodns_key_order)
        text = yaml.safe_dump({key: zone[key] for key in keys}, sort_keys=False, allow_unicode=True)
        data = load_text(text, "z.yaml")
        found = key_order_warning(data, "z.yaml")
        assert found == reference_key_order_warning(data, "z.yaml"), text
        outcomes.add(found is None)
    assert outcomes == {True, False}  # zones in order and zones out of order were both compared
