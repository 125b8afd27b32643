"""`smartdns explain`: what an address is answered, and why, decided as the server decides.

The answer shown is the server's own: the query is run through the same reference answer path
(responder.State.answer) over the same loaded zones, so NXDOMAIN, NODATA with the SOA, CNAME
chains and additional records read exactly as a resolver would get them. What explain cannot
know is live health: every value counts as up unless `--probe` runs the configured checks once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Iterable

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from .catalog import Catalog
from .config import Config
from .geo import Classifier, Location
from .health import HealthView, Target, probe, targets_of
from .model import Address, DynamicRRset
from .policy import IsUp, client_for, decide, scope_prefix, static_status
from .preflight import preflight
from .reload import dynamic_records, load_all
from .responder import State
from .wire import ClientSubnet, full_parse
from .zonefile import CONTINENT_OF

DEFAULT_TYPES = ("A", "AAAA", "MX")


def _describe(location: Location) -> str:
    if location.source == "unknown":
        return "unknown (only catch-all rules match)"
    source = "embedded RIR country data" if location.source == "embedded" else location.source.replace("mmdb:", "")
    parts = [f"country {location.country}", f"continent {location.continent or '?'}"]
    if location.subdivision:
        parts.append(f"subdivision {location.subdivision}")
    if location.prefixlen is not None:
        parts.append(f"block /{location.prefixlen}")
    return ", ".join(parts) + f" (from {source})"


def explain(config: Config, address_text: str, name: str | None, rtype: str | None, ecs: str | None,
            probe_health: bool = False) -> int:
    """Print the decision for ADDRESS [NAME [TYPE]] [--ecs PREFIX]; the exit code."""
    findings = preflight(config)
    for error in findings.errors:
        print(f"smartdns: {error}", file=sys.stderr)
    if findings.errors:
        return 2
    subnet = None
    if ecs:  # the command line checked it is a network
        network = ipaddress.ip_network(ecs, strict=False)
        raw = network.network_address.packed[: (network.prefixlen + 7) // 8]
        subnet = ClientSubnet(1 if network.version == 4 else 2, network.prefixlen, 0, raw)
    # the server's own rule for who the client is: a usable ECS subnet, else the resolver
    address, source_prefix, want_scope = client_for(subnet, address_text)
    result = load_all(config, sign=False)  # decisions only: no signatures needed
    for problem in result.problems:
        print(f"zone error: {problem}", file=sys.stderr)
    catalog = Catalog(result.zones)
    classifier = Classifier(config.geodb, CONTINENT_OF)
    location = classifier.locate(str(address))
    if subnet is not None and not want_scope:
        print(f"ECS {ecs} says nothing about the client (prefix 0 or not a global address): the resolver "
              f"decides, and an answer that depends on it carries SCOPE /{subnet.source} (this client subnet only)")
    print(f"client {address}" + (f" (ECS {ecs} via resolver {address_text})" if want_scope else ""))
    print(f"location: {_describe(location)}")
    records = dynamic_records(result.zones)
    if probe_health:
        is_up = _health(records, config.health.timeout)
    else:
        is_up = static_status
        if targets_of(records):
            print("health: not known to explain: every value counts as up, as before a running server's first "
                  "check (--probe runs the configured health checks once now)")
    state = State(catalog, classifier, ecs=config.ecs, server_id=config.server_id, is_up=is_up)
    if not name:
        if not records:
            print("no dynamic records")
        for record_owner, rdtype, record in _every_dynamic(catalog):
            print(f"{record_owner} {dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))}:")
            _decision(record_owner, record, address, location, is_up, subnet, want_scope, source_prefix)
        return 0
    refused = True
    for type_text in [rtype] if rtype else DEFAULT_TYPES:
        response = _server_answer(state, address_text, name, type_text, ecs)
        refused = refused and response.rcode() == dns.rcode.REFUSED
        print(f"{dns.name.from_text(name).to_text()} {type_text.upper()}: {_summary(response)}")
        for section, rrsets in (("answer", response.answer), ("authority", response.authority),
                                ("additional", response.additional)):
            for rrset in rrsets:
                for line in rrset.to_text().splitlines():
                    print(f"  {section} section: {line}")
        resolution = catalog.resolve(dns.name.from_text(name), dns.rdatatype.from_text(type_text))
        for entry in resolution.answer + resolution.additional:
            if isinstance(entry.source, DynamicRRset):
                _decision(entry.owner.to_text(), entry.source, address, location, is_up, subnet, want_scope,
                          source_prefix)
    return 1 if refused else 0


def _summary(response: dns.message.Message) -> str:
    """The rcode as a resolver sees it: NODATA is NOERROR with nothing answered."""
    rcode = response.rcode()
    aa = " (authoritative)" if response.flags & dns.flags.AA else ""
    if rcode == dns.rcode.REFUSED:
        return "REFUSED: not in any zone served"
    if rcode == dns.rcode.NXDOMAIN:
        return f"NXDOMAIN: no such name{aa}, SOA in authority"
    if rcode == dns.rcode.NOERROR and not response.answer:
        if response.authority and response.authority[0].rdtype == dns.rdatatype.NS:
            return "NOERROR: a referral to the delegated zone"
        return f"NODATA: the name exists, no record of this type{aa}, SOA in authority"
    return f"{dns.rcode.to_text(rcode)}{aa}"


def _server_answer(state: State, client: str, name: str, rtype: str, ecs: str | None) -> dns.message.Message:
    """The response the server gives `client` for NAME TYPE (with the ECS option, if any), over TCP."""
    options: list[dns.edns.Option] = []
    if ecs:
        network = ipaddress.ip_network(ecs, strict=False)
        options.append(dns.edns.ECSOption(str(network.network_address), network.prefixlen))
    query = dns.message.make_query(name, rtype, use_edns=0, options=options)
    query.flags &= ~dns.flags.RD  # as resolvers ask an authoritative server
    parsed = full_parse(query.to_wire())
    assert parsed is not None
    return dns.message.from_wire(state.answer(parsed, client, udp=False))


def _decision(owner: str, record: DynamicRRset, address: Address, location: Location, is_up: IsUp,
              subnet: ClientSubnet | None, want_scope: bool, source_prefix: int) -> None:
    kind = dns.rdatatype.to_text(record.rdtype)
    decision = decide(record, address, lambda: location, is_up)
    if decision.rule is not None:
        rule = record.rules[decision.rule - 1]
        matched = [str(n) for n in rule.subnets if n.version == address.version and address in n]
        why = f"subnet {matched[0]}" if matched else (f"geos {', '.join(rule.geos)}" if rule.geos else "catch-all")
        print(f"  {owner} {kind}: rule {decision.rule} ({why}) -> pool {decision.pool}")
    else:
        print(f"  {owner} {kind}: no rule matched -> {decision.pool} values")
    print("    answer: " + " ".join(v.text for v in decision.candidates))
    if subnet is not None:
        scope = (scope_prefix(record.subnets(), address, location.prefixlen, source_prefix) if want_scope
                 else subnet.source)  # as the server: the resolver decided, for this client subnet only
        print(f"    ecs scope: /{scope}")


def _every_dynamic(catalog: Catalog) -> Iterable[tuple[str, int, DynamicRRset]]:
    for zone in catalog.zones.values():
        for key, node in sorted(zone.nodes.items()):
            for rdtype, source in sorted(node.items()):
                if isinstance(source, DynamicRRset):
                    yield dns.name.from_wire(key, 0)[0].to_text(), rdtype, source


def _health(records: list[DynamicRRset], timeout: float) -> IsUp:
    """Run every configured health check once, now; print each result; the view of what is down."""
    targets = sorted(targets_of(records), key=str)
    if not targets:
        print("health: no record has a health check: every value counts as up")
        return static_status

    async def probe_all() -> list[tuple[bool, str]]:
        return list(await asyncio.gather(*(probe(target, timeout) for target in targets)))

    results = asyncio.run(probe_all())
    down: set[Target] = set()
    for target, (up, reason) in zip(targets, results):
        print(f"health: {target} {'up' if up else 'DOWN'} ({reason})")
        if not up:
            down.add(target)
    view = HealthView()
    view.set_down(frozenset(down))
    return view.is_up
