"""Plain records checked without octoDNS (simplerecords.py) against the same records through octoDNS.

Each generated zone is loaded twice: as smartdns loads it (plain A, AAAA, TXT and MX records
skip octoDNS) and with every record through octoDNS (`fast=False`). Both must accept the same
zones and build the same data (values, TTLs, the content serial, warnings), and refuse the
same zones with the same problems: the shortcut never lets through what octoDNS would refuse,
and never changes what is served.
"""

from __future__ import annotations

import ipaddress
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartdns.config import SoaSettings
from smartdns.model import StaticRRset, ZoneData, ZoneLoadError
from smartdns.simplerecords import SimpleRecords, _is_ipv4, _is_ipv6
from smartdns.yamlfile import load_text
from smartdns.zonefile import load_zone

# Values each type may be given: most valid, some in forms only octoDNS may judge or normalise
VALUES: dict[str, list[Any]] = {
    "A": ["10.0.0.1", "192.0.2.7", "255.255.255.255", "0.0.0.0", "010.0.0.1", "10.0.0", "10.0.0.256", "", None, 5,
          "fd00::1", " 10.0.0.1"],
    "AAAA": ["fd00::1", "2001:db8::10", "FD00::1", "fd00:0:0::1", "::ffff:10.0.0.1", "::", "10.0.0.1", "fd00::g", "",
             "fd00::1%eth0", "1::"],
    "TXT": ["v=spf1 -all", "v=spf1 ip4:10.0.0.0/8 ~all", "a", "x" * 255, "x" * 256, "semi;colon", "semi\\;colon",
            'say "hi"', "back\\slash", "é", "", " lead", "trail ", True, 3, "a  b"],
    "MX": [{"exchange": "mx.example.com.", "preference": 10}, {"exchange": "mx2.example.com.", "preference": 5},
           {"exchange": "Mx.example.com.", "preference": 10}, {"exchange": "mx.example.com", "preference": 10},
           {"exchange": "mx.example.com.", "preference": "10"}, {"exchange": "mx.example.com.", "preference": 70000},
           {"exchange": "mx.example.com.", "priority": 10}, {"value": "mx.example.com.", "preference": 10},
           {"exchange": "alias.example.com.", "preference": 1}, {"exchange": ".", "preference": 0},
           {"exchange": "mx.example.com.", "preference": True}, {"exchange": "mx.example.com."}, "mx.example.com.",
           {"exchange": "mx.", "preference": 10}, {"exchange": "a.1.", "preference": 10},
           {"exchange": "-a.example.com.", "preference": 10}, {"exchange": "_a.example.com.", "preference": 10}],
    "NS": ["ns1.example.com.", "ns.example.net.", "ns1.example.com", "ns.", "NS1.example.com.", "alias.example.com.",
           "", "10.0.0.1", "a..b.", "x" * 64 + ".com.", "ns_1.example.com."],
}
NAMES = ["", "www", "host1", "*", "*.wild", "_dmarc", "a.b.c", "UPPER", "@", "x" * 64, "-lead", "trail-", "a..b",
         "under_score", "sp ace", "mx", "mx2", "é"]


VALID = 2  # the first VALID values of each type and names are valid and plain


def pick(rng: random.Random, choices: list[Any]) -> Any:
    return rng.choice(choices[:VALID] if rng.random() < 0.9 else choices)


def random_record(rng: random.Random, rtype: str) -> dict[str, Any]:
    record: dict[str, Any] = {"type": rtype}
    roll = rng.random()
    if roll < 0.3:
        record["value"] = pick(rng, VALUES[rtype])
    elif roll < 0.9:
        record["values"] = [pick(rng, VALUES[rtype]) for _ in range(rng.randint(0 if roll > 0.85 else 1, 3))]
    else:
        record["value"] = pick(rng, VALUES[rtype])
        record["values"] = [pick(rng, VALUES[rtype])]
    if rng.random() < 0.7:
        record["ttl"] = pick(rng, [300, 0, 3600, 2**31 - 1, 2**31, -1, "300", True, 1.5])
    if rng.random() < 0.02:
        record["octodns"] = {"ignored": True}
    if rng.random() < 0.02:
        record["type"] = rng.choice([[rtype], None, rtype.lower(), {"t": rtype}])
    return record


def random_zone(rng: random.Random) -> dict[str, Any]:
    zone: dict[str, Any] = {"": [{"type": "NS", "values": ["ns1.example.com.", "ns2.example.com."]}]}
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(NAMES[:8]) if rng.random() < 0.9 else rng.choice(NAMES)
        records = [random_record(rng, rng.choice(sorted(VALUES))) for _ in range(rng.choice([1, 1, 2]))]
        if rng.random() < 0.04:
            records.append({"type": "CNAME", "value": "www.example.com."})
        if name == "":
            zone[""].extend(records)
        else:
            zone[name] = records if len(records) > 1 else records[0]
    if rng.random() < 0.3:
        zone["alias"] = {"type": "CNAME", "value": "www.example.com."}
    if rng.random() < 0.05:
        zone["dn"] = {"type": "DNAME", "value": "example.net."}
    return zone


def outcome(path: Path, fast: bool) -> ZoneData | list[str]:
    try:
        return load_zone(path, SoaSettings(), fast=fast)
    except ZoneLoadError as exc:
        return sorted(str(p) for p in exc.problems)


def served(zone: ZoneData) -> dict[tuple[bytes, int], tuple[int, list[str]]]:
    return {(name, int(rdtype)): (rrset.rdataset.ttl, sorted(r.to_text() for r in rrset.rdataset))
            for name, node in zone.nodes.items() for rdtype, rrset in node.items() if isinstance(rrset, StaticRRset)}


@pytest.mark.parametrize("seed", range(4))
def test_same_zones_same_data_same_problems_as_octodns(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    loaded = refused = 0
    for n in range(150):
        path = tmp_path / f"z{n}" / "example.com.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(random_zone(rng), allow_unicode=True))
        ours, theirs = outcome(path, True), outcome(path, False)
        text = path.read_text()
        if isinstance(theirs, list):
            assert ours == theirs, text
            refused += 1
            continue
        assert isinstance(ours, ZoneData), f"{ours}\n{text}"
        assert served(ours) == served(theirs), text
        assert (ours.serial, ours.record_count, ours.warnings) == (theirs.serial, theirs.record_count, theirs.warnings)
        loaded += 1
    assert loaded > 20 and refused > 20  # both kinds of zone are compared


def test_plain_records_do_skip_octodns() -> None:
    """The shortcut is taken where it should be (else the comparison above proves nothing)."""
    data = load_text("""\
'':
  - {type: NS, values: [ns1.example.com.]}
  - {type: MX, values: [{exchange: mx.example.com., preference: 10}]}
www: {type: A, value: 10.0.0.1}
v6: {type: AAAA, values: ['fd00::1', 'fd00::2']}
spf: {type: TXT, value: v=spf1 -all}
alias: {type: CNAME, value: www.example.com.}
mx-to-alias: {type: MX, value: {exchange: alias.example.com., preference: 1}}
""", "example.com.yaml")
    simple = SimpleRecords(data, "example.com.", 3600)
    taken = {name for name, entries in data.items() if simple.specs(name, entries) is not None}
    assert taken == {"", "www", "v6", "spf"}  # a CNAME node and an MX to a CNAME go to octoDNS


# what simplerecords checked addresses with before it asked the C library: the references
OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
DOTTED_QUAD = re.compile(rf"(?:{OCTET}\.){{3}}{OCTET}")


def ipv6_as_python_writes_it(text: str) -> bool:
    if ":" not in text or "%" in text:
        return False
    try:
        return str(ipaddress.IPv6Address(text)) == text
    except ValueError:
        return False


def test_addresses_taken_as_the_patterns_and_ipaddress_take_them() -> None:
    rng = random.Random(3)
    v4 = ["0", "1", "9", "10", "25", "99", "100", "199", "200", "249", "250", "255", "256", "300", "00", "01", "010",
          "1000", "", " 1", "1 ", "-1", "+1", "a", "\u0661", "1\x00"]
    v6 = ["0", "00", "000", "0000", "00000", "1", "a", "A", "f", "ff", "fff", "ffff", "fffff", "g", "", "fd00", "2001",
          "db8", "1.2.3.4", "10.0.0.1", "%eth0", " ", "\u0661"]
    cases = ["10.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3", "1.2.3.4.5", "1..2.3", "::1", "::", "1::", "::ffff:10.0.0.1",
             "fd00::1", "FD00::1", "fd00:0:0::1", "fd00:0:0:0:0:0:0:1", "1:0:0:1:0:0:0:1", "1:0:0:0:1:0:0:1",
             "1:0:1:0:1:0:1:0", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "fd00::1%eth0", "é", "1.2.3.4\x00"]
    for _ in range(20000):
        if rng.random() < 0.5:
            octets = [str(rng.randint(0, 255)) for _ in range(4)]
            if rng.random() < 0.3:
                octets[rng.randrange(4)] = rng.choice(v4)
            if rng.random() < 0.05:
                octets.append(rng.choice(v4)) if rng.random() < 0.5 else octets.pop()
            cases.append(".".join(octets))
        else:
            groups = [rng.choice(["0", "0", "0", "1", "fd00", "ffff", f"{rng.getrandbits(16):x}"]) for _ in range(8)]
            text = ":".join(groups)
            if rng.random() < 0.6:
                text = str(ipaddress.IPv6Address(text))  # Python's form: taken
            if rng.random() < 0.3:
                parts = text.split(":")
                parts[rng.randrange(len(parts))] = rng.choice(v6)
                text = ":".join(parts)
            cases.append(text)
    accepted = [0, 0]
    for text in cases:
        assert _is_ipv4(text) == (DOTTED_QUAD.fullmatch(text) is not None), repr(text)
        assert _is_ipv6(text) == ipv6_as_python_writes_it(text), repr(text)
        accepted[0] += _is_ipv4(text)
        accepted[1] += _is_ipv6(text)
    assert min(accepted) > 1000, accepted
