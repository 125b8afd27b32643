"""Checking the `subnets` of dynamic rules in linear time, with octoDNS's own messages.

octoDNS's rule validation (`_DynamicMixin._validate_rules`) compares every subnet with
every subnet seen before it: 10,000 subnets took 145 s to check, on every start and
reload. `linear(original)` wraps that validation: octoDNS checks the rules with each
rule's subnets replaced by one placeholder of its own (so that pools, order, defaults
and geos are checked as before), and the subnets are checked here: the same reasons,
worded alike, found by looking up each subnet's at most 129 supernets in a dict. The
record octoDNS builds afterwards still gets the real subnets (only validation sees the
placeholders).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Callable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Reason = Any  # octoDNS's ValidationReason, made by the `reason` factory we are given
Validated = tuple[list[Any], set[str]]  # what octoDNS's `_validate_rules` returns: reasons, pools seen


def _placeholder(rule_index: int) -> str:
    """A valid subnet of its own per rule, related to no other (0.0.0.0/8 is never routed)."""
    return f"0.{rule_index // 65536 % 256}.{rule_index // 256 % 256}.{rule_index % 256}/32"


def check_subnets(rules: list[Any], reason: Callable[[str], Reason]) -> dict[int, list[Reason]]:
    """octoDNS's subnet reasons, by rule number: invalid subnets, and subnets equal to or inside one
    already seen (in this or an earlier rule, octoDNS walking each rule's subnets sorted)."""
    listed = tuple((index + 1, tuple(rule["subnets"] if "subnets" in rule else ())) for index, rule in enumerate(rules)
                   if isinstance(rule, dict) and "pool" in rule and isinstance(rule.get("subnets", []), (list, tuple)))
    if all(type(subnet) is str for _, subnets in listed for subnet in subnets):
        found = _subnet_reasons(listed)  # a hosting provider's zones list the same segments: checked once
    else:  # values that would compare equal to other ones (1, 1.0, True) are not cached
        found = _subnet_reasons.__wrapped__(listed)
    return {number: [reason(text) for text in texts] for number, texts in found}


@functools.lru_cache(maxsize=32)
def _subnet_reasons(listed: tuple[tuple[int, tuple[Any, ...]], ...]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """check_subnets's reasons as text, for each (rule number, subnets) of rules octoDNS looks into."""
    out: list[tuple[int, tuple[str, ...]]] = []
    seen: dict[tuple[int, int, int], tuple[int, int, Network]] = {}  # (version, address, length) -> (order, rule, net)
    for number, subnets in listed:
        reasons = []
        networks = []
        for subnet in subnets:
            try:
                networks.append(ipaddress.ip_network(subnet))
            except (ValueError, TypeError):
                reasons.append(f'rule {number} invalid subnet "{subnet}"')
        for net in sorted(networks, key=lambda n: (n.version, n)):
            value, bits = int(net.network_address), net.max_prefixlen
            earlier = []
            for length in range(net.prefixlen + 1):
                key = (net.version, value >> (bits - length) << (bits - length), length)
                if key in seen:
                    earlier.append(seen[key])
            for _, where, other in sorted(earlier, key=lambda item: item[0]):  # octoDNS's order: first seen first
                if other.prefixlen == net.prefixlen:
                    reasons.append(f"rule {number} targets subnet {net} which has previously been seen in rule {where}")
                else:
                    reasons.append(f"rule {number} targets subnet {net} which is more specific than the "
                                   f"previously seen {other} in rule {where}")
            key = (net.version, value, net.prefixlen)
            seen[key] = (seen[key][0] if key in seen else len(seen), number, net)
        out.append((number, tuple(reasons)))
    return tuple(out)


def linear(original: Callable[..., Validated], make_reason: Callable[..., Reason]) -> Callable[..., Validated]:
    """`original` (octoDNS's `_validate_rules`, unbound) with the subnet checks done here."""

    def validate_rules(cls: Any, pools: Any, rules: Any, validator_id: Any = None) -> Validated:
        if not isinstance(rules, (list, tuple)):
            return original(cls, pools, rules, validator_id=validator_id)
        stand_ins = []
        for index, rule in enumerate(rules):
            if isinstance(rule, dict) and isinstance(rule.get("subnets"), (list, tuple)) and rule["subnets"]:
                rule = {**rule, "subnets": [_placeholder(index)]}
            stand_ins.append(rule)
        reasons, pools_seen = original(cls, pools, stand_ins, validator_id=validator_id)
        ours = check_subnets(list(rules), lambda text: make_reason(text, validator_id=validator_id))
        # octoDNS lists a rule's subnet reasons after its other reasons and before its geo ones
        merged: list[Any] = []
        for item in reasons:
            number = _rule_number(str(item))
            if number is None:
                last = max(ours, default=0)  # the final-rule reason: after every rule's
            else:
                last = number if _GEO_REASON.match(str(item)) else number - 1
            for earlier in sorted(n for n in ours if n <= last):
                merged.extend(ours.pop(earlier))
            merged.append(item)
        for number in sorted(ours):
            merged.extend(ours[number])
        return merged, pools_seen

    return validate_rules


# octoDNS's reasons about a rule's geos (GeoCodes.validate, and geos seen before), which follow its subnet reasons
_GEO_REASON = re.compile(r'rule \d+ (invalid geo code|unknown (continent|country|province) code|targets geo) ')


def _rule_number(text: str) -> int | None:
    words = text.split()
    return int(words[1]) if len(words) > 1 and words[0] == "rule" and words[1].isdigit() else None
