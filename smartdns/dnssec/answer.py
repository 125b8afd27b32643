"""The DNSSEC records of one response (RFC 4035 3.1): RRSIGs beside each RRset, NSEC proofs.

Nothing here signs (except a dynamic variant never seen before, once): signatures and
the NSEC chain were made at load. What a response needs is picked by the shape of the
resolution:
- answers: each RRset's RRSIGs; an RRset synthesized from a wildcard also carries the
  NSEC proving that no closer name exists (RFC 4035 3.1.3.3);
- NXDOMAIN: the NSEC covering the name and the one covering the wildcard of its
  closest encloser (3.1.3.2);
- NODATA: the name's own NSEC, or for an empty non-terminal the NSEC covering it,
  or for a wildcard without the type both the covering and the wildcard's NSEC (3.1.3.1, .4);
- a referral: the DS and its RRSIGs, or the cut's NSEC proving there is none (3.1.4);
- additional A/AAAA: RRSIGs too, dropped without TC when they do not fit (3.1.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import dns.name
import dns.rdataset
import dns.rdatatype

from ..model import DynamicRRset, PoolValue, ZoneData
from .nsec3 import Nsec3Chain, closest_encloser_proof, next_closer
from .zone import SignedZone, dynamic_rdataset

NXDOMAIN = 3
Pair = tuple[dns.name.Name, dns.rdataset.Rdataset]
Sourced = tuple[object, Pair, Sequence[PoolValue] | None]  # (source as loaded, (owner, rdataset) answered, values)


def _wire(name: dns.name.Name) -> bytes:
    return name.canonicalize().to_wire()  # type: ignore[return-value]


class Signatures:
    """All signed zones of one catalog, and where each loaded RRset's signatures are."""

    def __init__(self, signed: Iterable[tuple[object, SignedZone]]) -> None:
        self.by_zone: dict[int, SignedZone] = {}  # id(ZoneData) -> its signatures
        self.static: dict[int, dns.rdataset.Rdataset] = {}  # id(rdataset) -> RRSIGs
        self.dynamic: dict[int, SignedZone] = {}  # id(DynamicRRset) -> the zone that signs it
        self._keep = []  # the zone objects, so no id above is ever reused while this lives
        for zone, signed_zone in signed:
            self._keep.append(zone)
            self.by_zone[id(zone)] = signed_zone
            self.static.update(signed_zone.static)
            for key in signed_zone.dynamic:
                self.dynamic[key] = signed_zone

    def __bool__(self) -> bool:
        return bool(self.by_zone)

    def zone(self, zone: object) -> SignedZone | None:
        return self.by_zone.get(id(zone))

    def sigs(self, owner: dns.name.Name, source: object, values: Sequence[PoolValue] | None,
             rdataset: dns.rdataset.Rdataset, zone: SignedZone | None) -> dns.rdataset.Rdataset | None:
        if isinstance(source, DynamicRRset):
            signer = self.dynamic.get(id(source))
            return signer.dynamic_sigs(source, values or ()) if signer is not None else None
        found = self.static.get(id(rdataset))
        if found is None and zone is not None and rdataset.rdtype == dns.rdatatype.SOA:
            found = zone.static_sigs(_wire(zone.origin), rdataset)  # the negative SOA copy
        if found is not None and found.ttl != rdataset.ttl:
            found = found.copy()
            found.ttl = rdataset.ttl  # a negative SOA's shorter TTL
        return found


def _with_sigs(signatures: Signatures, entries: Iterable[Sourced],
               zone: SignedZone | None) -> list[Pair]:
    out: list[Pair] = []
    for source, (owner, rdataset), values in entries:
        out.append((owner, rdataset))
        sigs = signatures.sigs(owner, source, values, rdataset, zone)
        if sigs is not None:
            out.append((owner, sigs))
    return out


class Proof:
    """NSEC records (with their RRSIGs) for the authority section, each once."""

    def __init__(self, zone: SignedZone) -> None:
        self.zone = zone
        self.indexes: list[int] = []

    def add(self, index: int | None) -> None:
        if index is not None and index not in self.indexes:
            self.indexes.append(index)

    def pairs(self) -> list[Pair]:
        chain = self.zone.nsec
        out: list[Pair] = []
        for i in self.indexes:
            out.append((chain.owners[i], chain.rdatasets[i]))
            out.append((chain.owners[i], self.zone.nsec_sigs[i]))
        return out


def closest_encloser(names: frozenset[bytes], wire: bytes) -> bytes:
    """The longest existing ancestor of a name that does not exist (RFC 4592)."""
    at = 0
    while wire[at]:
        at += wire[at] + 1
        if wire[at:] in names:
            return wire[at:]
    return wire[at:]


def negative_proof(zone_data: ZoneData, signed: SignedZone, name: bytes, rcode: int) -> tuple[int, ...]:
    """The NSECs proving NXDOMAIN or NODATA for `name` (a lower-case wire name); for a random
    name this is two binary searches at most (the wildcard's NSEC is kept per encloser)."""
    chain = signed.nsec
    if isinstance(chain, Nsec3Chain):
        return nsec3_negative_proof(zone_data, signed, chain, name, rcode)
    if rcode == NXDOMAIN:
        covering = chain.covering(name)
        wildcard = signed.wildcard_covering(closest_encloser(zone_data.names, name))
        return (covering,) if covering == wildcard else (covering, wildcard)
    matching = chain.index.get(name)
    if matching is not None:
        return (matching,)  # the name exists without the type
    covering = chain.covering(name)  # an empty non-terminal, or a name only a wildcard answers
    if name in zone_data.names:
        return (covering,)
    source = chain.index.get(b"\x01*" + closest_encloser(zone_data.names, name))
    return (covering,) if source is None or source == covering else (covering, source)


def nsec3_negative_proof(zone_data: ZoneData, signed: SignedZone, chain: Nsec3Chain, name: bytes,
                         rcode: int) -> tuple[int, ...]:
    """RFC 5155 7.2.2-7.2.5: NXDOMAIN is the closest encloser proof and the NSEC3 covering its
    wildcard; NODATA the name's own NSEC3 (empty non-terminals have one), or for a wildcard
    without the type the closest encloser proof and the wildcard's NSEC3."""
    matching = chain.index.get(name)
    if rcode != NXDOMAIN and matching is not None:
        return (matching,)
    encloser = closest_encloser(zone_data.names, name)
    proof = closest_encloser_proof(chain, encloser, name)
    extra = signed.wildcard_covering(encloser) if rcode == NXDOMAIN else chain.index.get(b"\x01*" + encloser)
    return tuple(proof + [extra] if extra is not None and extra not in proof else proof)


def proof_indexes(zone_data: ZoneData, signed: SignedZone, final: bytes, rcode: int, has_answer_for_final: bool,
                  referral_cut: bytes | None, wildcard_owners: Iterable[bytes]) -> list[int]:
    """Which NSECs of `signed` a response needs (see the module docstring)."""
    chain = signed.nsec
    proof: list[int] = []
    for owner in wildcard_owners:  # the expanded name: no closer match exists
        if isinstance(chain, Nsec3Chain):  # RFC 5155 7.2.6: the next closer name is covered
            index = chain.covering(next_closer(owner, closest_encloser(zone_data.names, owner)))
        else:
            index = chain.covering(owner)
        if index not in proof:
            proof.append(index)
    if referral_cut is not None:
        cut = chain.matching(referral_cut)  # no DS at the cut: its NSEC shows NS without DS
        return proof + [cut] if cut is not None and cut not in proof else proof
    if rcode == NXDOMAIN or not has_answer_for_final:
        proof += [i for i in negative_proof(zone_data, signed, final, rcode) if i not in proof]
    return proof


def signed_sections(signatures: Signatures, resolution: object, qname: dns.name.Name, qtype: int,
                    answer: list[Sourced],
                    authority: list[Sourced],
                    additional: list[Sourced]) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """The three sections with RRSIGs after each RRset and the NSEC proof in authority.

    Each entry is (source as loaded, (owner, rdataset) as answered, the values of a dynamic
    source); `resolution` is the catalog's Resolution the entries came from.
    """
    zone_data = resolution.zone  # type: ignore[attr-defined]
    signed = signatures.zone(zone_data)
    out_answer = _with_sigs(signatures, answer, signed)
    out_authority = _with_sigs(signatures, authority, signed)
    out_additional = _with_sigs(signatures, additional, signed)
    if signed is None:
        return out_answer, out_authority, out_additional
    final = _wire(qname)
    wildcards: list[bytes] = []
    answered_final = False
    for source, (owner, rdataset), _ in answer:
        owner_wire = _wire(owner)
        node = zone_data.nodes.get(owner_wire)
        loaded = (id(source) in signatures.dynamic) or (id(rdataset) in signatures.static
                                                         and rdataset.rdtype != dns.rdatatype.NSEC)
        if loaded and _in_zone(owner_wire, zone_data) and (node is None or node.get(rdataset.rdtype) is not source):
            wildcards.append(owner_wire)  # synthesized from a wildcard: prove the name itself is absent
        if owner_wire == final and (rdataset.rdtype == qtype or qtype == dns.rdatatype.ANY):
            answered_final = True
        if rdataset.rdtype == dns.rdatatype.CNAME and qtype != dns.rdatatype.CNAME:
            final = _wire(rdataset[0].target)
    cut = None
    rcode = resolution.rcode  # type: ignore[attr-defined]
    if not answered_final and any(rd.rdtype == dns.rdatatype.NS for _, (_, rd), _ in authority):
        ns_owner = next(o for _, (o, rd), _ in authority if rd.rdtype == dns.rdatatype.NS)
        if any(rd.rdtype == dns.rdatatype.DS for _, (_, rd), _ in authority):
            return out_answer, out_authority, out_additional  # the signed DS is the proof
        cut = _wire(ns_owner)
    if rcode != NXDOMAIN and answered_final and not wildcards:
        return out_answer, out_authority, out_additional
    if not _in_zone(final, zone_data) and cut is None and not wildcards:
        return out_answer, out_authority, out_additional  # the chain left our zone
    indexes = proof_indexes(zone_data, signed, final, rcode, answered_final, cut, wildcards)
    proof = Proof(signed)
    for index in indexes:
        proof.add(index)
    return out_answer, out_authority + proof.pairs(), out_additional


def _in_zone(wire: bytes, zone_data: object) -> bool:
    origin: bytes = zone_data.wire  # type: ignore[attr-defined]
    return wire.endswith(origin)


def answer_entries(entries: Iterable[object], chosen: Iterator[tuple[PoolValue, ...]]) -> list[Sourced]:
    """(source, (owner, rdataset), values) for a section's entries, dynamic ones with their chosen values."""
    out: list[Sourced] = []
    for entry in entries:
        source = entry.source  # type: ignore[attr-defined]
        owner = entry.owner  # type: ignore[attr-defined]
        if isinstance(source, DynamicRRset):
            values = next(chosen)
            out.append((source, (owner, dynamic_rdataset(source, values)), values))
        else:
            out.append((source, (owner, source.rdataset), None))
    return out
