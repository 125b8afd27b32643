"""Loaded zones handed from the process that loads them to the processes that answer.

Parsing and validating run in another process (the loader of a single server, or the
supervisor of workers), so the interpreter that answers queries never runs them. It
receives only what changed: a zone whose file did not change is said to be unchanged,
and the receiver keeps its own copy. A changed zone comes in pieces of a few hundred
names, each decoded with the interpreter let go in between, and with the collector
paused (the decoded data has no cycles): a query waits for one piece at most.

Frames on the wire: a 4-byte length, then a pickle. The first frame of an update says
what is in it; the pieces of the changed zones follow in the order it lists them.
"""

from __future__ import annotations

import copy
import copyreg
import gc
import pickle
import struct
import sys
import time
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Callable, Mapping

import dns.rdata
import dns.rdataset
import dns.rdatatype

from .model import DynamicRRset, Problem, ZoneData, dynamic_sources, immutable_rdataset

REPACK_NODES = 1000  # a zone with more names than this is built again packed after the first load
PIECE = 200  # names per piece: one decodes in about a millisecond
PAUSE = 0.0002  # seconds the decoding thread lets the answering threads run between pieces
LENGTH = struct.Struct("!I")


def _mapping(data: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(data)


def _rdataset(rdtype: int, ttl: int, rdatas: tuple[dns.rdata.Rdata, ...]) -> dns.rdataset.ImmutableRdataset:
    return immutable_rdataset(dns.rdatatype.RdataType.make(rdtype), ttl, rdatas)


# The model's read-only mappings and dnspython's immutable rdatasets cannot be pickled as they are.
copyreg.pickle(MappingProxyType, lambda m: (_mapping, (dict(m),)))
copyreg.pickle(dns.rdataset.ImmutableRdataset, lambda r: (_rdataset, (int(r.rdtype), r.ttl, tuple(r))))


@dataclass(frozen=True)
class Update:
    """One load's outcome, as the receiver applies it."""

    order: tuple[str, ...]  # every zone file served, in load order
    unchanged: tuple[str, ...]  # of those, the ones the receiver already has as they are
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    kept: tuple[str, ...]
    # (file, zone without names and nodes, pieces of each, a signed zone's dynamic signatures by (owner, type))
    changed: tuple[tuple[str, ZoneData, int, int, dict[tuple[bytes, int], Any]], ...]
    reason: str = ""  # why the sender loaded
    parsed: int = 0  # files the sender parsed again


def encode(zones: Mapping[str, ZoneData], previous: Mapping[str, ZoneData], problems: tuple[Problem, ...],
           warnings: tuple[Problem, ...], kept: tuple[str, ...], reason: str, parsed: int) -> list[bytes]:
    """The frames of an update from `previous` (what the receiver has) to `zones`."""
    unchanged = tuple(path for path, zone in zones.items() if previous.get(path) is zone)
    pieces: list[bytes] = []
    changed = []
    for path, zone in zones.items():
        if previous.get(path) is zone:
            continue
        nodes = list(zone.nodes.items())
        names = sorted(zone.names)
        node_pieces = [_dump(dict(nodes[i:i + PIECE])) for i in range(0, len(nodes), PIECE)]
        name_pieces = [_dump(names[i:i + PIECE * 4]) for i in range(0, len(names), PIECE * 4)]
        shell, variants = _portable(replace(zone, nodes=MappingProxyType({}), names=frozenset(), dynamic=()), zone)
        changed.append((path, shell, len(node_pieces), len(name_pieces), variants))
        pieces += node_pieces + name_pieces
    update = Update(tuple(zones), unchanged, problems, warnings, kept, tuple(changed), reason, parsed)
    return [_dump(update)] + pieces


def _portable(shell: ZoneData, zone: ZoneData) -> tuple[ZoneData, dict[tuple[bytes, int], Any]]:
    """A signed zone finds the signatures of an RRset by the RRset's identity (dnssec.zone.SignedZone),
    which does not cross processes: they travel by (owner, type) and are found again by `decode`."""
    signed = zone.dnssec
    if signed is None:
        return shell, {}
    variants = {(owner, int(rdtype)): signed.dynamic[id(source)]
                for owner, node in zone.nodes.items() for rdtype, source in node.items() if id(source) in signed.dynamic}
    portable = copy.copy(signed)
    portable.static, portable.dynamic = {}, {}
    return replace(shell, dnssec=portable), variants


def _signatures_by_identity(shell: ZoneData, nodes: Mapping[bytes, Any], variants: dict[tuple[bytes, int], Any]) -> None:
    signed = shell.dnssec  # a fresh copy of the sender's, ours to complete
    if signed is None:
        return
    for nsec, nsec_sigs in zip(signed.nsec.rdatasets, signed.nsec_sigs):  # an NSEC asked for by type
        signed.static[id(nsec)] = nsec_sigs
    for owner, node in nodes.items():
        for rdtype, source in node.items():
            static = getattr(source, "rdataset", None)
            sigs = signed.by_type.get((owner, rdtype)) if static is not None else None
            if sigs is not None:
                signed.static[id(static)] = sigs
            entry = variants.get((owner, int(rdtype)))
            if entry is not None:
                signed.dynamic[id(source)] = entry


def _dump(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def frame(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def read_frame(read: Callable[[int], bytes]) -> bytes:
    """One frame through `read(n)` (which returns up to n bytes, b'' at the end)."""
    head = _exactly(read, LENGTH.size)
    return _exactly(read, LENGTH.unpack(head)[0])


def _exactly(read: Callable[[int], bytes], size: int) -> bytes:
    parts, missing = [], size
    while missing:
        part = read(min(missing, 1 << 20))
        if not part:
            raise EOFError("the other process went away")
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


def receive(read: Callable[[int], bytes]) -> list[bytes]:
    """Every frame of one update (reading releases the interpreter; nothing is decoded yet)."""
    first = read_frame(read)
    update = pickle.loads(first)
    count = sum(nodes + names for _, _, nodes, names, _ in update.changed)
    return [first] + [read_frame(read) for _ in range(count)]


def decode(frames: list[bytes], previous: Mapping[str, ZoneData],
           pause: float = PAUSE) -> tuple[dict[str, ZoneData], Update]:
    """The zones an update describes, the unchanged ones taken from `previous` (call from a thread
    other than the answering ones: it pauses between pieces so that they run)."""
    update: Update = pickle.loads(frames[0])
    built: dict[str, ZoneData] = {}
    at = 1
    interval = sys.getswitchinterval()
    # Decoded data has no cycles, and a full collection now would walk the old and the new with the
    # interpreter held: the collector stays off until the caller has frozen the new data (gc.freeze).
    gc.disable()
    sys.setswitchinterval(0.001)  # an answering thread that wants the interpreter gets it within 1 ms
    try:
        for path, shell, node_count, name_count, variants in update.changed:
            nodes: dict[bytes, Any] = {}
            dynamic: list[DynamicRRset] = []  # the same objects as in the nodes: found piece by piece
            before = previous[path].nodes if path in previous else {}
            for _ in range(node_count):
                piece = pickle.loads(frames[at])
                for key, node in piece.items():  # a name that did not change keeps the objects it had
                    held = before.get(key)
                    if held is not None and _same_node(held, node):
                        piece[key] = held
                nodes.update(piece)
                dynamic += dynamic_sources(piece.values())
                at += 1
                time.sleep(pause)
            names: list[bytes] = []
            for _ in range(name_count):
                names += pickle.loads(frames[at])
                at += 1
                time.sleep(pause)
            _signatures_by_identity(shell, nodes, variants)
            built[path] = replace(shell, nodes=MappingProxyType(nodes), names=frozenset(names), dynamic=tuple(dynamic))
    except BaseException:
        gc.enable()
        raise
    finally:
        sys.setswitchinterval(interval)
    zones = {}
    for path in update.order:
        zones[path] = built[path] if path in built else previous[path]
    return zones, update


def _same_node(held: Mapping[Any, Any], fresh: Mapping[Any, Any]) -> bool:
    """The same records at one name: one edit to a big zone then costs the memory of what it changed,
    not of a second copy of the zone (the new copy of an unchanged name is let go at once)."""
    return held.keys() == fresh.keys() and all(
        type(held[rdtype]) is type(source) and held[rdtype] == source for rdtype, source in fresh.items())


def repack(zones: dict[str, ZoneData]) -> None:
    """Build `zones` again in place, packed: a load leaves its data scattered among the holes its
    parse left, which the process keeps (a 50,000-record zone: 141 MiB resident); encoded, let go,
    and decoded into the emptied heap, the same zones take 83 MiB, for 0.3-0.6 s of CPU. The caller
    must hold the only reference to the zones, or the originals stay too. Nothing may be answered
    meanwhile (no pauses between pieces); the collector stays off, as after `decode`.

    Only zones of more than REPACK_NODES names are: a small zone costs more to encode and decode
    (~1 ms each, 1.3 s for 1,000 zones of 10 records) than its scattered records waste, and
    repacking would give it its own copy of the subnet lists it shares with other zones."""
    big = {path: zone for path, zone in zones.items() if len(zone.nodes) > REPACK_NODES}
    if not big:
        return
    order = list(zones)
    frames = encode(big, {}, (), (), (), "", 0)
    for path in big:
        del zones[path]  # the originals go now, before their copies are made
    big.clear()
    built, _ = decode(frames, {}, pause=0)
    kept = dict(zones)
    zones.clear()
    zones.update((path, built[path] if path in built else kept[path]) for path in order)
