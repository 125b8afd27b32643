"""Long segment lists (issue 13): rule subnets in a structure whose lookups do not grow with the list.

The prefix set must give exactly what scanning every prefix gives (membership, and the ECS
scope as gdnsd computes it); the linear subnet check must give exactly octoDNS's reasons, in
octoDNS's order; and a real zone with a 10,000-subnet rule is checked and served, its
mistakes still named by file and line.
"""

from __future__ import annotations

import ipaddress
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import dns.edns
import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# The reference: octoDNS's validation as it ships, taken before smartdns replaces it.
from octodns.record.dynamic import _DynamicMixin  # the test imports octoDNS on purpose

from smartdns.prefixes import PrefixSet

OCTODNS_VALIDATE_RULES = _DynamicMixin._validate_rules.__func__
import smartdns.zonefile  # noqa: E402,F401  installs the linear check

LINEAR_VALIDATE_RULES = _DynamicMixin._validate_rules.__func__


def scanned_scope(networks, address, scope: int) -> int:
    """The ECS scope by scanning every prefix (what policy.scope_prefix did before)."""
    bits, value = address.max_prefixlen, int(address)
    for net in networks:
        if net.version != address.version:
            continue
        if address in net:
            scope = max(scope, net.prefixlen)
        elif net.prefixlen > scope:
            common = bits - (value ^ int(net.network_address)).bit_length()
            if common >= scope:
                scope = common + 1
    return min(scope, bits)


def near(base: int, rng: random.Random, bits: int) -> int:
    """An address sharing a random number of leading bits with `base`."""
    return (base ^ rng.getrandbits(rng.randint(1, bits))) & ((1 << bits) - 1)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0))
def test_prefix_set_agrees_with_a_scan(seed):
    rng = random.Random(seed)
    base4, base6 = rng.getrandbits(32), rng.getrandbits(128)
    networks = []
    for _ in range(rng.randint(0, 30)):
        if rng.random() < 0.8:
            networks.append(ipaddress.ip_network((near(base4, rng, 32), rng.randint(0, 32)), strict=False))
        else:
            networks.append(ipaddress.ip_network((near(base6, rng, 128), rng.randint(0, 128)), strict=False))
    prefixes = PrefixSet(networks)
    assert list(prefixes) == networks
    for _ in range(100):
        if rng.random() < 0.8:
            address = ipaddress.ip_address(near(base4, rng, 32))
        else:
            address = ipaddress.IPv6Address(near(base6, rng, 128))
        assert (address in prefixes) == any(address in n for n in networks if n.version == address.version)
        start = rng.randint(0, address.max_prefixlen)
        assert prefixes.scope(address, start) == scanned_scope(networks, address, start)


def random_rules(rng: random.Random) -> list | str:
    def subnet() -> str:
        return rng.choice(["1.2.3.4/33", "10.0.0.1/8", f"2001:db8:{rng.randint(0, 3)}::/{rng.choice([32, 48, 64])}",
                           *[f"10.{rng.randint(0, 3)}.{rng.choice([0, 0, 1])}.0/{rng.choice([8, 16, 24, 24])}"] * 6])

    rules: list = []
    for _ in range(rng.randint(1, 5)):
        rule: dict = {}
        if rng.random() < 0.95:
            rule["pool"] = rng.choice(["a", "b", "c", "missing"])
        if rng.random() < 0.6:
            rule["subnets"] = [subnet() for _ in range(rng.randint(0, 5))]
        if rng.random() < 0.05:
            rule["subnets"] = "10.0.0.0/8"
        if rng.random() < 0.4:
            rule["geos"] = rng.sample(["AS", "AS-CN", "EU", "NA-US", "XX", "AS-XX", "NA-US-XX"], rng.randint(1, 2))
        rules.append(rule)
    if rng.random() < 0.5:
        rules.append({"pool": "a"})
    return rng.choice([[], "not a list"]) if rng.random() < 0.02 else rules


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0))
def test_linear_subnet_check_says_what_octodns_says(seed):
    rules = random_rules(random.Random(seed))
    pools = {"a": {}, "b": {}, "c": {}}
    theirs, their_pools = OCTODNS_VALIDATE_RULES(_DynamicMixin, pools, rules, validator_id="dynamic")
    for _ in range(2):  # the second time from the cache of subnet lists checked before
        ours, our_pools = LINEAR_VALIDATE_RULES(_DynamicMixin, pools, rules, validator_id="dynamic")
        assert [str(r) for r in ours] == [str(r) for r in theirs]
        assert our_pools == their_pools


@pytest.mark.parametrize("seed", range(40))
def test_subnet_lists_checked_before_give_octodns_reasons_again(seed):
    """Zones that list the same segments are checked from a cache: the same reasons as octoDNS every
    time, also for lists whose values compare equal but read differently (1, 1.0, True)."""
    rng = random.Random(seed)
    rules = random_rules(rng)
    if isinstance(rules, list) and rules and seed % 4 == 0:
        rules[0] = {"pool": "a", "subnets": [rng.choice([1, 1.0, True, "1", "0.0.0.1/32", None]) for _ in range(3)]}
    pools = {"a": {}, "b": {}, "c": {}}
    theirs, their_pools = OCTODNS_VALIDATE_RULES(_DynamicMixin, pools, rules, validator_id="dynamic")
    for _ in range(2):
        ours, our_pools = LINEAR_VALIDATE_RULES(_DynamicMixin, pools, rules, validator_id="dynamic")
        assert [str(r) for r in ours] == [str(r) for r in theirs]
        assert [r.validator_id for r in ours] == [r.validator_id for r in theirs]
        assert our_pools == their_pools


def segments(count: int) -> list[str]:
    return [f"{20 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24" for i in range(count)]


def long_rule_zone(subnets: list[str]) -> str:
    listed = "".join(f"          - {s}\n" for s in subnets)
    return textwrap.dedent("""\
        '':
          type: NS
          values: [ns1.example.com.]
        mx:
          dynamic:
            pools:
              domestic:
                values:
                  - value: 10.0.0.1
              overseas:
                values:
                  - value: 10.0.0.2
            rules:
              - pool: domestic
                subnets:
        """) + listed + "      - pool: overseas\n  ttl: 60\n  type: A\n  values: [10.0.0.1, 10.0.0.2]\n"


@pytest.mark.slow
def test_ten_thousand_subnet_rule_mistakes_named_by_line(tmp_path: Path):
    subnets = segments(10_000)
    subnets[5000] = subnets[10]  # line 16 + 5000: seen before
    subnets[7000] = "20.0.20.128/25"  # line 16 + 7000: inside 20.0.20.0/24
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "example.com.yaml").write_text(long_rule_zone(subnets))
    result = subprocess.run([sys.executable, "-m", "smartdns", "check", "--zones", "zones"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert ("zones/example.com.yaml:14: mx A: rule 1 targets subnet 20.0.10.0/24 which has previously been seen "
            "in rule 1, via: dynamic") in lines, lines
    assert ("zones/example.com.yaml:14: mx A: rule 1 targets subnet 20.0.20.128/25 which is more specific than the "
            "previously seen 20.0.20.0/24 in rule 1, via: dynamic") in lines, lines


@pytest.mark.slow
def test_ten_thousand_subnet_rule_served(smartdns):
    server = smartdns(zones={"example.com": long_rule_zone(segments(10_000))}, args=("--workers", "1"))
    for client, expected, scope in (("20.0.39.0", "10.0.0.1", 24), ("21.0.4.0", "10.0.0.2", 24),
                                    ("8.8.8.0", "10.0.0.2", 24)):
        option = dns.edns.ECSOption(client, 24)
        reply = server.query("mx.example.com", "A", use_edns=0, options=[option])
        assert [r.address for r in reply.answer[0]] == [expected], (client, reply)
        echoed = next(o for o in reply.options if isinstance(o, dns.edns.ECSOption))
        assert echoed.scopelen == scope, (client, echoed)
