"""policy.py in-process: rules, pools, fallback, fail-open, weighted picks, ECS scope, who the client is."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from types import MappingProxyType

import dns.rdata
import dns.rdatatype

from smartdns import policy
from smartdns.geo import UNKNOWN, Location
from smartdns.model import DynamicRRset, Pool, PoolValue, Rule
from smartdns.policy import DEFAULT_POOL, FAIL_OPEN_POOL, Picker, client_for, decide, scope_prefix
from smartdns.prefixes import PrefixSet
from smartdns.wire import parse_ecs

CN = Location("AS", "CN", None, 16, "test")
US = Location("NA", "US", "CA", 8, "test")


def value(address: str, weight: int = 1, status: str = "obey") -> PoolValue:
    return PoolValue(address, dns.rdata.from_text("IN", "A", address), weight, status)


DOMESTIC, OVERSEAS, OVERSEAS2 = value("192.0.2.10"), value("198.51.100.10", 3), value("198.51.100.11")


def record(rules: tuple[Rule, ...] = (Rule("domestic", ("AS-CN",), (ipaddress.ip_network("10.9.0.0/16"),)),
                                      Rule("overseas")), max_answers: int = 1) -> DynamicRRset:
    pools = {"domestic": Pool("domestic", (DOMESTIC,), "overseas"), "overseas": Pool("overseas", (OVERSEAS, OVERSEAS2))}
    return DynamicRRset("mx", dns.rdatatype.A, 60, MappingProxyType(pools), rules, (DOMESTIC, OVERSEAS), max_answers)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_first_matching_rule_picks_the_pool():
    assert decide(record(), ip("1.2.3.4"), lambda: CN).pool == "domestic"
    assert decide(record(), ip("1.2.3.4"), lambda: US).pool == "overseas"
    assert decide(record(), ip("1.2.3.4"), lambda: UNKNOWN).rule == 2  # only the catch-all matches unknown


def test_rule_subnets_match_before_any_lookup():
    def locate() -> Location:
        raise AssertionError("a subnet match must not look the address up")

    decision = decide(record(), ip("10.9.1.1"), locate)
    assert (decision.pool, decision.rule, decision.candidates) == ("domestic", 1, (DOMESTIC,))


def test_a_pool_with_nothing_up_falls_back_then_to_the_plain_values_then_fails_open():
    def down(*addresses: str):
        return lambda _record, v: v.text not in addresses

    assert decide(record(), ip("1.2.3.4"), lambda: CN, down("192.0.2.10")).pool == "overseas"
    partly = decide(record(), ip("1.2.3.4"), lambda: CN, down("192.0.2.10", "198.51.100.11"))
    assert partly.pool == "overseas" and partly.candidates == (OVERSEAS,)
    everything = ("192.0.2.10", "198.51.100.10", "198.51.100.11")
    nothing_up = decide(record(), ip("1.2.3.4"), lambda: CN, down(*everything))
    assert (nothing_up.pool, nothing_up.candidates) == (FAIL_OPEN_POOL, (DOMESTIC, OVERSEAS))
    no_pool_up_but_plain = decide(record(), ip("1.2.3.4"), lambda: US, down("198.51.100.10", "198.51.100.11"))
    assert (no_pool_up_but_plain.pool, no_pool_up_but_plain.candidates) == (DEFAULT_POOL, (DOMESTIC,))


def test_status_down_in_the_zone_counts_as_down():
    assert not policy.static_status(record(), value("192.0.2.1", status="down"))
    assert policy.static_status(record(), value("192.0.2.1", status="obey"))


def test_picker_draws_by_weight():
    picker = Picker((OVERSEAS, OVERSEAS2), 1, random.Random(3))
    counts = Counter(picker.chosen(picker.draw())[0].text for _ in range(4000))
    assert 2800 < counts["198.51.100.10"] < 3200  # weight 3 of 4


def test_picker_with_max_answers_gives_distinct_values():
    picker = Picker((DOMESTIC, OVERSEAS, OVERSEAS2), 2, random.Random(5))
    for _ in range(200):
        chosen = picker.chosen(picker.draw())
        assert len(chosen) == 2 and len(set(chosen)) == 2
    assert Picker((DOMESTIC,), 3, random.Random()).draw() == (0,)  # one value: always it, no randomness


def test_scope_is_the_database_block_narrowed_until_no_rule_subnet_is_cut():
    subnets = PrefixSet([ipaddress.ip_network("10.9.128.0/17")])
    assert scope_prefix(subnets, ip("10.9.1.1"), 16, 24) == 17  # the /16 would cut the rule's /17
    assert scope_prefix(subnets, ip("10.9.200.1"), 16, 24) == 17  # inside the subnet: at least its length
    assert scope_prefix(PrefixSet(), ip("1.2.3.4"), None, 24) == 24  # no block: the query's source prefix
    assert scope_prefix(PrefixSet(), ip("1.2.3.4"), 8, 24) == 8


def test_client_is_the_ecs_subnet_when_usable_else_the_source():
    usable = parse_ecs(b"\x00\x01\x18\x00\x01\x02\x03")
    assert client_for(usable, "127.0.0.1") == (ip("1.2.3.0"), 24, True)
    zero = parse_ecs(b"\x00\x01\x00\x00")
    assert client_for(zero, "127.0.0.1") == (ip("127.0.0.1"), 32, False)
    assert client_for(None, "::ffff:1.2.3.4") == (ip("1.2.3.4"), 32, False)  # dual-stack socket, IPv4 client
    assert client_for(None, "fe80::1%eth0") == (ip("fe80::1"), 128, False)

