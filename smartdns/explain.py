"""`smartdns explain`: what an address is answered, and why, decided as the server decides."""

from __future__ import annotations

import ipaddress
import sys

import dns.name
import dns.rdatatype

from .catalog import Catalog
from .config import Config
from .geo import Classifier, Location
from .model import DynamicRRset, RRsetSource, StaticRRset
from .policy import client_for, decide, scope_prefix
from .preflight import preflight
from .reload import load_all
from .wire import ClientSubnet
from .zonefile import CONTINENT_OF


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


def explain(config: Config, address_text: str, name: str | None, rtype: str | None, ecs: str | None) -> int:
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
    targets = _explain_targets(catalog, name, rtype)
    if not targets:
        print("no dynamic records" if not name else f"{name}: not in any zone served")
        return 0 if not name else 1
    for owner, rdtype, entries in targets:
        print(f"{owner} {dns.rdatatype.to_text(rdtype)}:")
        for entry_owner, source in entries:
            kind = dns.rdatatype.to_text(source.rdtype if isinstance(source, DynamicRRset) else source.rdataset.rdtype)
            if isinstance(source, StaticRRset):
                print(f"  {entry_owner} {kind} (static)")
                print("    answer: " + " ".join(r.to_text() for r in source.rdataset))
                continue
            decision = decide(source, address, lambda: location)
            if decision.rule is not None:
                rule = source.rules[decision.rule - 1]
                matched = [str(n) for n in rule.subnets if n.version == address.version and address in n]
                why = f"subnet {matched[0]}" if matched else (f"geos {', '.join(rule.geos)}" if rule.geos else "catch-all")
                print(f"  {entry_owner} {kind}: rule {decision.rule} ({why}) -> pool {decision.pool}")
            else:
                print(f"  {entry_owner} {kind}: no rule matched -> {decision.pool} values")
            print("    answer: " + " ".join(v.text for v in decision.candidates))
            if subnet is not None:
                scope = (scope_prefix(source.subnets(), address, location.prefixlen, source_prefix) if want_scope
                         else subnet.source)  # as the server: the resolver decided, for this client subnet only
                print(f"    ecs scope: /{scope}")
    return 0


ExplainTarget = tuple[str, dns.rdatatype.RdataType, list[tuple[dns.name.Name, RRsetSource]]]


def _explain_targets(catalog: Catalog, name: str | None, rtype: str | None) -> list[ExplainTarget]:
    """(owner, type, [(owner, source)...]) for NAME [TYPE], or every dynamic record."""
    if name:
        qname = dns.name.from_text(name)
        types = [dns.rdatatype.from_text(rtype)] if rtype else [dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX]
        out: list[ExplainTarget] = []
        for rdtype in types:
            resolution = catalog.resolve(qname, rdtype)
            entries = [(e.owner, e.source) for e in resolution.answer + resolution.additional]
            if entries or rtype:
                out.append((qname.to_text(), rdtype, entries))
        return out if any(entries for _, _, entries in out) else []
    out = []  # every dynamic record
    for zone in catalog.zones.values():
        for key, node in sorted(zone.nodes.items()):
            for rdtype, source in sorted(node.items()):
                if isinstance(source, DynamicRRset):
                    owner = dns.name.from_wire(key, 0)[0]
                    out.append((owner.to_text(), rdtype, [(owner, source)]))
    return out
