"""All loaded zones and authoritative name lookup (RFC 1034 4.3.2, 2308, 4592, 6672, 8482).

`Catalog.resolve` turns (name, type) into a `Resolution`: which RRsets go in
which section. Dynamic RRsets stay unresolved in it; the responder asks the
policy which values a given client gets. A Catalog never changes: a reload
builds a new one and swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.HINFO
from dns.rdatatype import RdataType

from .dnssec.answer import Signatures
from .model import DynamicRRset, RRsetSource, StaticRRset, ZoneData, immutable_rdataset
from .wire import NOERROR, NXDOMAIN, REFUSED, name_key

MAX_CHAIN = 12  # CNAME/DNAME steps followed inside our zones before we stop
ADDITIONAL_FOR = {dns.rdatatype.MX: "exchange", dns.rdatatype.NS: "target", dns.rdatatype.SRV: "target"}
ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
YXDOMAIN = dns.rcode.YXDOMAIN
# RFC 8482 4.2: answer ANY with one RRset; this order puts what old MTAs look for first
ANY_PREFERENCE = (dns.rdatatype.CNAME, dns.rdatatype.MX, dns.rdatatype.A, dns.rdatatype.AAAA,
                  dns.rdatatype.TXT, dns.rdatatype.NS)


@dataclass(frozen=True, slots=True)
class Entry:
    owner: dns.name.Name
    source: RRsetSource

    @property
    def rdtype(self) -> RdataType:
        s = self.source
        return s.rdtype if isinstance(s, DynamicRRset) else s.rdataset.rdtype


@dataclass(frozen=True, slots=True)
class Resolution:
    rcode: int
    aa: bool
    zone: ZoneData | None = None
    answer: tuple[Entry, ...] = ()
    authority: tuple[Entry, ...] = ()
    additional: tuple[Entry, ...] = ()
    glue: frozenset[dns.name.Name] = field(default=frozenset())  # additional owners a referral cannot do without

    @property
    def negative(self) -> bool:
        """NXDOMAIN or NODATA with the zone's SOA alone: the same for every name of the zone."""
        return not self.answer and not self.additional and len(self.authority) == 1 \
            and self.authority[0].rdtype == dns.rdatatype.SOA and self.zone is not None

    @property
    def dynamic(self) -> bool:
        return any(isinstance(e.source, DynamicRRset) for e in self.answer + self.additional)


REFUSE = Resolution(REFUSED, aa=False)


def _negative_resolution(zone: ZoneData, rcode: int, answer: tuple[Entry, ...]) -> Resolution:
    """NXDOMAIN/NODATA: SOA in authority with the negative TTL (RFC 2308 3, 5)."""
    soa = immutable_rdataset(dns.rdatatype.SOA, zone.negative_ttl, tuple(zone.soa))
    return Resolution(rcode, True, zone, answer, (Entry(zone.origin, StaticRRset(soa)),))


def _suffixes(wire: bytes) -> list[int]:
    """Offsets of every label of a (valid, uncompressed) wire name, the root's last."""
    offsets = []
    at = 0
    while True:
        offsets.append(at)
        length = wire[at]
        if length == 0:
            return offsets
        at += length + 1


class Catalog:
    def __init__(self, zones: Mapping[str, ZoneData], previous: Catalog | None = None) -> None:
        """`previous`: the catalog this one replaces; what it made for a zone that is still the same
        object is taken over (a reload of one zone among 1,000 then builds one zone's, not 1,000's)."""
        self.zones = dict(zones)  # file path -> zone (for reporting)
        self._by_origin: dict[bytes, ZoneData] = {z.wire or name_key(z.origin): z for z in zones.values()}
        self.signatures = Signatures((z, z.dnssec) for z in zones.values() if z.dnssec is not None)
        # NXDOMAIN and NODATA with nothing before them are the same for every name of a zone: made
        # when a zone is first asked for one (a start with 1,000 zones does not wait for 2,000)
        before = previous._negatives if previous is not None else {}
        self._negatives: dict[bytes, tuple[Resolution, Resolution]] = {
            key: made for key, made in before.items() if made[0].zone is self._by_origin.get(key)}

    def negatives(self, key: bytes, zone: ZoneData) -> tuple[Resolution, Resolution]:
        """The zone's NXDOMAIN and NODATA resolutions (two threads making them at once make equal ones)."""
        made = self._negatives.get(key)
        if made is None:
            made = (_negative_resolution(zone, NXDOMAIN, ()), _negative_resolution(zone, NOERROR, ()))
            self._negatives[key] = made
        return made

    def resolve_wire(self, qname: bytes, qtype: RdataType) -> Resolution:
        """`resolve` for a lower-case wire name, without building dnspython names for the cases
        a flood of random names hits: NXDOMAIN and empty non-terminals."""
        offsets = _suffixes(qname)
        for index, at in enumerate(offsets):  # noqa: B007 - `index` is read after the loop
            zone = self._by_origin.get(qname[at:])
            if zone is not None:
                break
        else:
            return REFUSE
        if qtype == dns.rdatatype.NSEC and zone.dnssec is not None:
            own = zone.dnssec.nsec_rrset(qname)  # a name's NSEC, asked for by type (RFC 4035 3.1.4 names it data)
            if own is not None:
                return Resolution(NOERROR, True, zone, (Entry(own[0], StaticRRset(own[1])),))
        if index == 0 or qtype in (dns.rdatatype.ANY, dns.rdatatype.DS):
            return self.resolve(dns.name.from_wire(qname, 0)[0], qtype)  # the apex, or a special type
        nodes = zone.nodes
        for at in reversed(offsets[:index]):  # from just below the apex down to the name itself
            node = nodes.get(qname[at:])
            if node is not None and (dns.rdatatype.NS in node or dns.rdatatype.DNAME in node or at == 0):
                return self.resolve(dns.name.from_wire(qname, 0)[0], qtype)  # a cut, a DNAME, or data
        nxdomain, nodata = self.negatives(qname[offsets[index]:], zone)
        if qname in zone.names:
            return nodata  # an empty non-terminal: NODATA, and it blocks wildcards
        for at in offsets[1:index + 1]:  # the closest encloser, then its wildcard
            if qname[at:] in zone.names:
                if b"\x01*" + qname[at:] in nodes:
                    return self.resolve(dns.name.from_wire(qname, 0)[0], qtype)
                break
        return nxdomain

    def __len__(self) -> int:
        return len(self._by_origin)

    def zone_for(self, name: dns.name.Name) -> ZoneData | None:
        """The deepest zone of ours that contains `name`."""
        while True:
            zone = self._by_origin.get(name_key(name))
            if zone is not None:
                return zone
            if len(name) <= 1:
                return None
            name = name.parent()

    def resolve(self, qname: dns.name.Name, qtype: RdataType) -> Resolution:
        zone = self.zone_for(qname)
        if zone is None:
            return REFUSE
        if qtype == dns.rdatatype.DS and qname == zone.origin:
            # DS belongs to the parent side of a cut (RFC 4035 3.1.4.1): answer from the parent if it is ours
            parent = self.zone_for(qname.parent()) if len(qname) > 1 else None
            zone = parent or zone
        answer: list[Entry] = []
        name = qname
        for _ in range(MAX_CHAIN):
            step = self._step(zone, name, qtype, answer)
            if not isinstance(step, dns.name.Name):
                return self._with_additional(step)
            name = step
            next_zone = self.zone_for(name)
            if next_zone is None:
                break  # the chain leaves our zones: the resolver follows it
            zone = next_zone
        return self._with_additional(Resolution(NOERROR, True, zone, tuple(answer)))

    def _step(self, zone: ZoneData, name: dns.name.Name, qtype: RdataType, answer: list[Entry]) -> Resolution | dns.name.Name:
        """One name of a chain: a final Resolution, or the next name to follow."""
        origin_len = len(zone.origin)
        # Walk down from the apex looking for a zone cut or a DNAME above `name`.
        for depth in range(origin_len + 1, len(name) + 1):
            ancestor = name.split(depth)[1]
            node = zone.nodes.get(name_key(ancestor))
            if not node:
                continue
            ns = node.get(dns.rdatatype.NS)
            if ns is not None and not (ancestor == name and qtype == dns.rdatatype.DS):
                return self._referral(zone, ancestor, ns, answer)
            dname = node.get(dns.rdatatype.DNAME)
            if dname is not None and ancestor != name:
                return self._dname(zone, name, qtype, ancestor, dname, answer)
        node = zone.nodes.get(name_key(name))
        owner = name
        if node is None:
            if name_key(name) in zone.names:
                return self._negative(zone, NOERROR, answer)  # empty non-terminal: NODATA, blocks wildcards
            node = self._wildcard(zone, name)
            if node is None:
                return self._negative(zone, NXDOMAIN, answer)
        if qtype == dns.rdatatype.ANY:
            for rdtype in ANY_PREFERENCE + tuple(sorted(node)):
                if rdtype in node:
                    answer.append(Entry(owner, node[rdtype]))
                    return Resolution(NOERROR, True, zone, tuple(answer))
        found = node.get(qtype)
        if found is not None:
            answer.append(Entry(owner, found))
            return Resolution(NOERROR, True, zone, tuple(answer))
        cname = node.get(dns.rdatatype.CNAME)
        if cname is not None:
            answer.append(Entry(owner, cname))
            if isinstance(cname, StaticRRset):
                target: dns.name.Name = cname.rdataset[0].target
                if any(e.owner == target for e in answer):
                    return Resolution(NOERROR, True, zone, tuple(answer))  # a loop: stop here
                return target
            return Resolution(NOERROR, True, zone, tuple(answer))  # dynamic CNAME: the client decides the target
        return self._negative(zone, NOERROR, answer)

    def _wildcard(self, zone: ZoneData, name: dns.name.Name) -> Mapping[RdataType, RRsetSource] | None:
        """RFC 4592: the source of synthesis is `*.` + the closest encloser."""
        encloser = name.parent()
        while len(encloser) >= len(zone.origin):
            if name_key(encloser) in zone.names:
                return zone.nodes.get(name_key(dns.name.Name((b"*",) + encloser.labels)))
            encloser = encloser.parent()
        return None

    def _dname(self, zone: ZoneData, name: dns.name.Name, qtype: RdataType, owner: dns.name.Name, dname: RRsetSource,
               answer: list[Entry]) -> Resolution | dns.name.Name:
        answer.append(Entry(owner, dname))
        if not isinstance(dname, StaticRRset):
            return Resolution(NOERROR, True, zone, tuple(answer))
        try:
            target = name.relativize(owner).concatenate(dname.rdataset[0].target)
        except dns.name.NameTooLong:
            return Resolution(YXDOMAIN, True, zone, tuple(answer))  # RFC 6672 2.2
        synthesized = immutable_rdataset(dns.rdatatype.CNAME, dname.rdataset.ttl,
                                         (dns.rdtypes.ANY.CNAME.CNAME(dns.rdataclass.IN, dns.rdatatype.CNAME, target),))
        answer.append(Entry(name, StaticRRset(synthesized)))
        if qtype == dns.rdatatype.CNAME:
            return Resolution(NOERROR, True, zone, tuple(answer))  # the synthesized CNAME is what was asked
        return target

    def _referral(self, zone: ZoneData, cut: dns.name.Name, ns: RRsetSource, answer: list[Entry]) -> Resolution:
        authority: tuple[Entry, ...] = (Entry(cut, ns),)
        glue = []
        if isinstance(ns, StaticRRset):
            for rdata in ns.rdataset:
                if rdata.target.is_subdomain(cut):  # in-bailiwick: unreachable without glue
                    glue.extend(self._addresses(zone, rdata.target))
        ds = zone.nodes.get(name_key(cut), {}).get(dns.rdatatype.DS)
        if ds is not None:
            authority += (Entry(cut, ds),)
        return Resolution(NOERROR, bool(answer), zone, tuple(answer), authority, tuple(glue),
                          frozenset(e.owner for e in glue))

    def _negative(self, zone: ZoneData, rcode: int, answer: list[Entry]) -> Resolution:
        """NXDOMAIN/NODATA; with nothing before it, the zone's precomputed one."""
        if answer:
            return _negative_resolution(zone, rcode, tuple(answer))
        nxdomain, nodata = self.negatives(zone.wire, zone)
        return nxdomain if rcode == NXDOMAIN else nodata

    def _addresses(self, zone: ZoneData, target: dns.name.Name) -> list[Entry]:
        node = zone.nodes.get(name_key(target), {})
        return [Entry(target, node[t]) for t in ADDRESS_TYPES if t in node]

    def _with_additional(self, resolution: Resolution) -> Resolution:
        """A/AAAA for MX, NS and SRV targets in our zones (RFC 1035 3.3.9, 2782)."""
        seen = {e.owner for e in resolution.additional}
        extra: list[Entry] = []
        for entry in resolution.answer + resolution.authority:
            field_name = ADDITIONAL_FOR.get(entry.rdtype)
            if field_name is None or not isinstance(entry.source, StaticRRset):
                continue
            if entry.rdtype == dns.rdatatype.NS and resolution.glue:
                continue  # a referral's glue is already there
            for rdata in entry.source.rdataset:
                target = getattr(rdata, field_name)
                if target in seen or target == dns.name.root:
                    continue
                seen.add(target)
                zone = self.zone_for(target)
                if zone is not None and not self._below_cut(zone, target):
                    extra.extend(self._addresses(zone, target))
        if not extra:
            return resolution
        return Resolution(resolution.rcode, resolution.aa, resolution.zone, resolution.answer,
                          resolution.authority, resolution.additional + tuple(extra), resolution.glue)

    def _below_cut(self, zone: ZoneData, name: dns.name.Name) -> bool:
        for depth in range(len(zone.origin) + 1, len(name) + 1):
            node = zone.nodes.get(name_key(name.split(depth)[1]))
            if node and dns.rdatatype.NS in node:
                return True
        return False
