"""The NSEC3 chain of a zone (RFC 5155) with the RFC 9276 parameters `1 0 0 -`, built once at load.

SHA-1, no opt-out, no extra iterations, no salt: each owner is the base32hex of one
SHA-1 of the canonical wire name. Every authoritative name, every delegation point and
every empty non-terminal gets an NSEC3 whose bitmap lists the same types the NSEC
chain would (without NSEC). Matching a name that exists is a dict lookup (kept by
original name); only a name that does not exist is hashed, once, per query.
"""

from __future__ import annotations

import hashlib
from base64 import b32hexencode
from bisect import bisect_right
from collections.abc import Iterable, Mapping

import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.NSEC3PARAM

from .denial import DenialChain, authoritative_names, wire_of

ALGORITHM = 1  # SHA-1, the only one defined
FLAGS = 0  # no opt-out (RFC 9276 3.1)
ITERATIONS = 0  # RFC 9276 3.1
SALT = b""  # RFC 9276 3.1


def nsec3_digest(wire: bytes) -> bytes:
    """RFC 5155 5 with zero iterations and no salt: H(owner name in canonical wire form)."""
    return hashlib.sha1(wire).digest()  # SHA-1: what NSEC3 algorithm 1 is


def nsec3param_rdataset(ttl: int) -> dns.rdataset.ImmutableRdataset:
    rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC3PARAM, ttl=ttl)
    rdataset.add(dns.rdtypes.ANY.NSEC3PARAM.NSEC3PARAM(dns.rdataclass.IN, dns.rdatatype.NSEC3PARAM,
                                                       ALGORITHM, FLAGS, ITERATIONS, SALT))
    return dns.rdataset.ImmutableRdataset(rdataset)


def _ancestors(wire: bytes, origin_wire: bytes) -> Iterable[bytes]:
    """The names between `wire` (excluded) and the apex (included)."""
    at = 0
    while len(wire) - at > len(origin_wire):
        at += wire[at] + 1
        yield wire[at:]


class Nsec3Chain(DenialChain):
    """NSEC3 RRsets in hash order; `index` maps an original (lower-case wire) name to its NSEC3.

    The same shape as NsecChain (owners, rdatasets, index, matching, covering), so signing,
    the authority-section Proof and the negative templates take either chain."""

    def __init__(self, origin: dns.name.Name, types_at: Mapping[bytes, Iterable[int]], ttl: int) -> None:
        origin_wire = wire_of(origin)
        authoritative = authoritative_names(origin_wire, types_at)
        names: dict[bytes, set[int]] = {k: set(types_at[k]) for k in authoritative}
        for key in authoritative:
            for ancestor in _ancestors(key, origin_wire):
                names.setdefault(ancestor, set())  # an empty non-terminal (RFC 5155 7.1)
        by_digest = sorted((nsec3_digest(k), k) for k in names)
        self.origin = origin
        self.digests: list[bytes] = [d for d, _ in by_digest]
        self.owners: list[dns.name.Name] = [
            dns.name.Name([b32hexencode(d).lower(), *origin.labels]) for d in self.digests]
        self.index: dict[bytes, int] = {k: i for i, (_, k) in enumerate(by_digest)}
        self.rdatasets: list[dns.rdataset.ImmutableRdataset] = []
        for i, (_, key) in enumerate(by_digest):
            types = names[key]
            if key != origin_wire and dns.rdatatype.NS in types:
                types &= {dns.rdatatype.NS, dns.rdatatype.DS}  # a delegation point: only what the parent holds
            if types and types != {dns.rdatatype.NS}:
                types |= {dns.rdatatype.RRSIG}  # signed data here (an insecure cut's NS is not signed)
            windows = dns.rdtypes.ANY.NSEC3.Bitmap.from_rdtypes(sorted(dns.rdatatype.RdataType.make(t) for t in types))
            next_digest = self.digests[(i + 1) % len(by_digest)]
            rdataset = dns.rdataset.Rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC3, ttl=ttl)
            rdataset.add(dns.rdtypes.ANY.NSEC3.NSEC3(dns.rdataclass.IN, dns.rdatatype.NSEC3, ALGORITHM, FLAGS,
                                                     ITERATIONS, SALT, next_digest, windows))
            self.rdatasets.append(dns.rdataset.ImmutableRdataset(rdataset))

    def covering(self, wire: bytes) -> int:
        """The NSEC3 whose hash span contains the name's hash (the last one wraps to the first)."""
        return (bisect_right(self.digests, nsec3_digest(wire)) - 1) % len(self.digests)


def next_closer(name: bytes, encloser: bytes) -> bytes:
    """The ancestor of `name` (or itself) one label longer than its closest encloser (RFC 5155 1.3)."""
    at = 0
    while True:
        rest = name[at + name[at] + 1:]
        if len(rest) <= len(encloser):
            return name[at:]
        at += name[at] + 1


def closest_encloser_proof(chain: Nsec3Chain, encloser: bytes, name: bytes) -> list[int]:
    """RFC 5155 7.2.1: the encloser's NSEC3 and the one covering the next closer name."""
    out = [i for i in (chain.matching(encloser), chain.covering(next_closer(name, encloser))) if i is not None]
    return list(dict.fromkeys(out))
