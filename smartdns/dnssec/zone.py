"""A loaded zone, signed: the apex key records, an RRSIG for every static RRset, the
NSEC chain, and the signed variants of every dynamic RRset.

All of it is made at load (or when a signing window or a key's timing rolls over),
off the query path. A dynamic RRset answers one of a finite set of value
combinations; the first `PRESIGN_VARIANTS` of them (every one a pool or the plain
values can give while all are up) are signed at load, any other (some values
down) on first use, kept per exact RRset, so the cache grows with the variants
and never with the clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from types import MappingProxyType

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
from dns.rdtypes.ANY.CDNSKEY import CDNSKEY

from ..model import DynamicRRset, PoolValue, Problem, StaticRRset, ZoneData, ZoneLoadError
from .denial import NsecChain, wire_of
from .keys import ZoneKey, load
from .nsec3 import Nsec3Chain, nsec3param_rdataset
from .sign import Signer, Window

PRESIGN_VARIANTS = 64  # per dynamic RRset, signed at load
VARIANT_LIMIT = 4096  # per dynamic RRset, signed on first use; cleared when full
DNSKEY_TTL = 3600
DELETE_CDS = "0 0 0 00"  # RFC 8078 4: remove the DS at the parent
DELETE_CDNSKEY = "0 3 0 AA=="


def variant_key(values: Iterable[PoolValue]) -> frozenset[bytes]:
    """The exact RRset a set of values makes (order does not matter to a signature)."""
    return frozenset(v.rdata.to_digestable() for v in values)


def dynamic_rdataset(record: DynamicRRset, values: Iterable[PoolValue]) -> dns.rdataset.Rdataset:
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.RdataType.make(record.rdtype), ttl=record.ttl)
    for value in values:
        rdataset.add(value.rdata)
    return rdataset


def variants(record: DynamicRRset, limit: int) -> list[tuple[PoolValue, ...]]:
    """The RRsets the record answers while every value is up: each pool's and the plain values'
    `max_answers`-subsets (one pick over M values: M variants), at most `limit`."""
    out: list[tuple[PoolValue, ...]] = []
    seen: set[frozenset[bytes]] = set()
    for values in [pool.values for pool in record.pools.values()] + [record.values]:
        for combo in combinations(values, min(record.max_answers, len(values))):
            key = variant_key(combo)
            if key not in seen:
                seen.add(key)
                out.append(combo)
                if len(out) >= limit:
                    return out
    return out


@dataclass
class DynamicSignatures:
    owner: dns.name.Name  # as signed (a wildcard's own name, not the expanded one)
    record: DynamicRRset
    by_variant: dict[frozenset[bytes], dns.rdataset.Rdataset] = field(default_factory=dict)


def apex_key_rdatasets(origin: dns.name.Name, keys: Sequence[ZoneKey], now: float,
                       ttl: int = DNSKEY_TTL) -> dict[int, dns.rdataset.Rdataset]:
    """DNSKEY (published keys), CDS and CDNSKEY (keys in sync; the delete form when every key
    has left sync and none is coming: the zone is going unsigned, RFC 8078)."""
    out: dict[int, dns.rdataset.Rdataset] = {}
    published = sorted((k for k in keys if k.published(now)), key=lambda k: k.tag)
    if not published:
        return out
    dnskeys = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.DNSKEY, ttl=ttl)
    for key in published:
        dnskeys.add(key.dnskey)
    out[dns.rdatatype.DNSKEY] = dnskeys
    in_sync = [k for k in published if k.in_sync(now)]
    cds = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.CDS, ttl=ttl)
    cdnskey = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.CDNSKEY, ttl=ttl)
    if in_sync:
        for key in in_sync:
            cds.add(dns.dnssec.make_cds(origin, key.dnskey, "SHA256"))
            cdnskey.add(CDNSKEY(dns.rdataclass.IN, dns.rdatatype.CDNSKEY, key.dnskey.flags, key.dnskey.protocol,
                                key.dnskey.algorithm, key.dnskey.key))
    elif all(k.timing.sync_delete is not None and k.timing.sync_delete <= now for k in published):
        cds.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CDS, DELETE_CDS))
        cdnskey.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CDNSKEY, DELETE_CDNSKEY))
    if len(cds):
        out[dns.rdatatype.CDS] = cds
        out[dns.rdatatype.CDNSKEY] = cdnskey
    return out


class SignedZone:
    """Everything DNSSEC adds to one zone, for one signing window; never changed after `build`
    except the on-first-use variant signatures."""

    def __init__(self, origin: dns.name.Name, signer: Signer, keys: Sequence[ZoneKey], nsec: NsecChain | Nsec3Chain,
                 negative_ttl: int, next_event: float) -> None:
        self.origin = origin
        self.signer = signer
        self.keys = tuple(keys)
        self.nsec = nsec
        self.nsec_sigs: list[dns.rdataset.Rdataset] = []
        self.negative_ttl = negative_ttl
        self.next_event = next_event  # when the signatures or the key set must be made again
        self.static: dict[int, dns.rdataset.Rdataset] = {}  # id(rdataset) -> its RRSIGs
        self.by_type: dict[tuple[bytes, int], dns.rdataset.Rdataset] = {}  # (owner, type) -> RRSIGs
        self.dynamic: dict[int, DynamicSignatures] = {}  # id(DynamicRRset) -> its variants' RRSIGs
        self.wildcard_cover: dict[bytes, int] = {}  # closest encloser -> NSEC covering its wildcard (existing names only)

    def nsec_rrset(self, wire: bytes) -> tuple[dns.name.Name, dns.rdataset.ImmutableRdataset] | None:
        if isinstance(self.nsec, Nsec3Chain):
            return None  # an NSEC3 lives at a hashed name, not at the name asked for
        index = self.nsec.matching(wire)
        return None if index is None else (self.nsec.owners[index], self.nsec.rdatasets[index])

    def wildcard_covering(self, encloser: bytes) -> int:
        """The NSEC (or NSEC3) covering `*.encloser` (the same for every random name below it: kept)."""
        index = self.wildcard_cover.get(encloser)
        if index is None:
            index = self.wildcard_cover[encloser] = self.nsec.covering(b"\x01*" + encloser)
        return index

    @property
    def window(self) -> Window:
        return self.signer.window

    def static_sigs(self, owner_wire: bytes, rdataset: dns.rdataset.Rdataset) -> dns.rdataset.Rdataset | None:
        found = self.static.get(id(rdataset))
        return found if found is not None else self.by_type.get((owner_wire, rdataset.rdtype))

    def dynamic_sigs(self, record: DynamicRRset, values: Iterable[PoolValue]) -> dns.rdataset.Rdataset | None:
        """The RRSIGs of one variant; signed now if it is one not signed at load (bounded)."""
        entry = self.dynamic.get(id(record))
        if entry is None:
            return None
        values = tuple(values)
        key = variant_key(values)
        sigs = entry.by_variant.get(key)
        if sigs is None:
            sigs = self.signer.sign(entry.owner, dynamic_rdataset(record, values))
            if len(entry.by_variant) >= VARIANT_LIMIT:
                entry.by_variant.clear()
            entry.by_variant[key] = sigs
        return sigs


def sign_nodes(origin: dns.name.Name, nodes: Mapping[bytes, Mapping[int, object]], keys: Sequence[ZoneKey],
               negative_ttl: int, now: float, static_type: type,
               dnskey_ttl: int = DNSKEY_TTL,
               nsec3: bool = False) -> tuple[dict[bytes, dict[int, object]], SignedZone] | None:
    """Sign a zone's nodes; returns the nodes with the apex key records added and what signs them,
    or None when no key of the zone is published at `now` (the zone is served unsigned).
    With `nsec3`, denial is an NSEC3 chain (`1 0 0 -`) and the apex gets its NSEC3PARAM."""
    apex_records = apex_key_rdatasets(origin, keys, now, dnskey_ttl)
    if not apex_records:
        return None
    signer = Signer(origin, keys, now)
    if not signer.signing:
        return None
    origin_wire = wire_of(origin)
    new_nodes: dict[bytes, dict[int, object]] = {k: dict(v) for k, v in nodes.items()}
    for rdtype, rdataset in apex_records.items():
        new_nodes[origin_wire][rdtype] = static_type(dns.rdataset.ImmutableRdataset(rdataset))
    if nsec3:
        new_nodes[origin_wire][dns.rdatatype.NSEC3PARAM] = static_type(nsec3param_rdataset(negative_ttl))
    chain = Nsec3Chain if nsec3 else NsecChain
    nsec = chain(origin, {k: list(v) for k, v in new_nodes.items()}, negative_ttl)
    events = [t for k in keys for t in k.events() if t > now]
    signed = SignedZone(origin, signer, keys, nsec, negative_ttl, min([signer.window.end, *events]))
    for key, node in new_nodes.items():
        if key not in nsec.index:
            continue  # occluded: glue below a cut is not signed
        owner = dns.name.from_wire(key, 0)[0]
        cut = key != origin_wire and dns.rdatatype.NS in node
        for rdtype, source in node.items():
            if cut and rdtype != dns.rdatatype.DS:
                continue  # the child's NS is not ours to sign (RFC 4035 2.2)
            if isinstance(source, DynamicRRset):
                entry = DynamicSignatures(owner, source)
                for combo in variants(source, PRESIGN_VARIANTS):
                    entry.by_variant[variant_key(combo)] = signer.sign(owner, dynamic_rdataset(source, combo))
                signed.dynamic[id(source)] = entry
            else:
                rdataset = source.rdataset  # type: ignore[attr-defined]
                sigs = signer.sign(owner, rdataset)
                signed.static[id(rdataset)] = sigs
                signed.by_type[(key, rdtype)] = sigs
    for owner, rdataset in zip(nsec.owners, nsec.rdatasets):
        signed.nsec_sigs.append(signer.sign(owner, rdataset))
        signed.static[id(rdataset)] = signed.nsec_sigs[-1]  # for an NSEC asked for by type
    signer.finish()
    return new_nodes, signed


def frozen_nodes(nodes: Mapping[bytes, Mapping[int, object]]) -> Mapping[bytes, Mapping[int, object]]:
    return MappingProxyType({k: MappingProxyType(dict(v)) for k, v in nodes.items()})


def sign_zone(zone: ZoneData, directory: Path, dnskey_ttl: int, now: float, nsec3: bool = False) -> ZoneData:
    """The zone signed with its keys in `directory` (unchanged when it has none published),
    its denial an NSEC3 chain when `nsec3`;
    a key file that cannot be used fails the load, naming the file, so the last good version stays."""
    keys, problems = load(directory, zone.origin)
    if problems:
        raise ZoneLoadError([Problem(zone.path, 1, "", "", f"DNSSEC key: {p}") for p in problems])
    if not keys:
        return zone
    signed = sign_nodes(zone.origin, zone.nodes, keys, zone.negative_ttl, now, StaticRRset, dnskey_ttl,  # type: ignore[arg-type]
                        nsec3)
    if signed is None:
        return zone
    nodes, signed_zone = signed
    return replace(zone, nodes=frozen_nodes(nodes), dnssec=signed_zone)  # type: ignore[arg-type]
