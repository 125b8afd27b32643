"""`smartdns dump ZONE`: the zone as one client is served it, in zone-file format.

Static RRsets as loaded; each dynamic RRset as the client's rules and pools give it
(the first `max_answers` values of its pool, so the output is reproducible); with
DNSSEC the DNSKEY/CDS/CDNSKEY, the NSEC (or NSEC3) chain and every RRSIG, so ldns-verify-zone,
named-checkzone, or another server taking the zone over can read it.
"""

from __future__ import annotations

from collections.abc import Callable

import dns.name
import dns.rdataset
import dns.rdatatype

from .dnssec.denial import sort_key
from .dnssec.nsec3 import Nsec3Chain
from .dnssec.zone import dynamic_rdataset
from .model import Address, DynamicRRset, ZoneData
from .policy import Located, decide


def zone_text(zone: ZoneData, address: Address, locate: Callable[[], Located], dnssec: bool) -> str:
    signed = zone.dnssec if dnssec else None
    lines: list[str] = []

    def put(owner: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> None:
        lines.append(rdataset.to_text(owner))

    apex = zone.wire
    order = sorted(zone.nodes, key=lambda key: (key != apex, sort_key(key)))
    for key in order:
        owner = dns.name.from_wire(key, 0)[0]
        node = zone.nodes[key]
        for rdtype in sorted(node, key=lambda t: (t != dns.rdatatype.SOA, t)):
            source = node[rdtype]
            if isinstance(source, DynamicRRset):
                values = decide(source, address, locate).candidates[: source.max_answers]
                rdataset = dynamic_rdataset(source, values)
                put(owner, rdataset)
                sigs = signed.dynamic_sigs(source, values) if signed is not None else None
            else:
                put(owner, source.rdataset)
                sigs = signed.static_sigs(key, source.rdataset) if signed is not None else None
            if sigs is not None:
                put(owner, sigs)
        if signed is not None and not isinstance(signed.nsec, Nsec3Chain):
            index = signed.nsec.matching(key)
            if index is not None:
                put(owner, signed.nsec.rdatasets[index])
                put(owner, signed.nsec_sigs[index])
    if signed is not None and isinstance(signed.nsec, Nsec3Chain):  # at hashed names, in hash order
        for owner, rdataset, sigs in zip(signed.nsec.owners, signed.nsec.rdatasets, signed.nsec_sigs):
            put(owner, rdataset)
            put(owner, sigs)
    return "\n".join(lines) + "\n"
