"""The NSEC chain of a zone (RFC 4034 4, RFC 4035 2.3), built once at load.

Every authoritative name and every delegation point gets an NSEC naming the
next one in canonical order and the types at it. The types come from the zone
data alone (a dynamic A is type A for every client, whatever its health), so a
proof never depends on who asks. Negative answers then need no signing and no
hashing: the proof for any name is one binary search away, and resolvers that
use RFC 8198 answer random names from the chain they already hold.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NSEC

SortKey = tuple[bytes, ...]


def sort_key(wire: bytes) -> SortKey:
    """RFC 4034 6.1 canonical order for a lower-case wire name: labels compared from the root."""
    labels = []
    at = 0
    length = wire[0]
    while length:
        end = at + 1 + length
        labels.append(wire[at + 1:end])
        at = end
        length = wire[at]
    return tuple(reversed(labels))


def wire_of(name: dns.name.Name) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None  # without a file, to_wire returns the bytes
    return wire


def occluded(origin_wire: bytes, key: bytes, cuts: Iterable[bytes]) -> bool:
    """Below a delegation point (or a DNAME): glue or data nobody is authoritative for here."""
    return any(key != cut and key.endswith(cut) and _is_label_boundary(key, cut) for cut in cuts if cut != origin_wire)


def _is_label_boundary(key: bytes, suffix: bytes) -> bool:
    at = 0
    target = len(key) - len(suffix)
    while at < target:
        at += key[at] + 1
    return at == target


def authoritative_names(origin_wire: bytes, types_at: Mapping[bytes, Iterable[int]]) -> list[bytes]:
    """The names a denial chain covers: all but those below a delegation point or a DNAME."""
    cuts = [k for k, types in types_at.items()
            if k != origin_wire and (dns.rdatatype.NS in types or dns.rdatatype.DNAME in types)]
    dnames = [k for k, types in types_at.items() if dns.rdatatype.DNAME in types]
    return [k for k in types_at
            if k == origin_wire or not (occluded(origin_wire, k, cuts) or occluded(origin_wire, k, dnames))]


class DenialChain:
    """What NSEC and NSEC3 chains share: records in chain order, and each original name's index."""

    owners: list[dns.name.Name]
    rdatasets: list[dns.rdataset.ImmutableRdataset]
    index: dict[bytes, int]

    def __len__(self) -> int:
        return len(self.owners)

    def matching(self, wire: bytes) -> int | None:
        """The record owned by (for NSEC3: hashed from) this name, if it has one."""
        return self.index.get(wire)


class NsecChain(DenialChain):
    """NSEC RRsets by owner, with lookups for the proofs a negative answer needs."""

    def __init__(self, origin: dns.name.Name, types_at: Mapping[bytes, Iterable[int]], ttl: int) -> None:
        origin_wire = wire_of(origin)
        owners = sorted(authoritative_names(origin_wire, types_at), key=sort_key)
        self.origin = origin
        self.keys: list[SortKey] = [sort_key(k) for k in owners]
        self.owners: list[dns.name.Name] = [dns.name.from_wire(k, 0)[0] for k in owners]
        self.index: dict[bytes, int] = {k: i for i, k in enumerate(owners)}
        self.rdatasets: list[dns.rdataset.ImmutableRdataset] = []
        for i, key in enumerate(owners):
            types = set(types_at[key])
            if key != origin_wire and dns.rdatatype.NS in types:
                types &= {dns.rdatatype.NS, dns.rdatatype.DS}  # a delegation point: only what the parent holds
            types |= {dns.rdatatype.NSEC, dns.rdatatype.RRSIG}
            next_name = self.owners[(i + 1) % len(owners)]
            windows = dns.rdtypes.ANY.NSEC.Bitmap.from_rdtypes(sorted(dns.rdatatype.RdataType.make(t) for t in types))
            rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC, ttl=ttl)
            rdataset.add(dns.rdtypes.ANY.NSEC.NSEC(dns.rdataclass.IN, dns.rdatatype.NSEC, next_name, windows))
            self.rdatasets.append(dns.rdataset.ImmutableRdataset(rdataset))

    def covering(self, wire: bytes) -> int:
        """The NSEC whose span contains the name (its owner, when the name is one)."""
        return max(bisect_right(self.keys, sort_key(wire)) - 1, 0)
