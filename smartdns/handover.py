"""Loaded zones handed from the process that loads them to the processes that answer.

Parsing and validating run in another process (the loader of a single server, or the
supervisor of workers), so the interpreter that answers queries never runs them. It
receives only what changed: a zone whose file did not change is said to be unchanged,
and the receiver keeps its own copy. Of a changed zone only the names whose records
changed come, when the sender knows what the receiver has (the loader by each name's
digest, the supervisor by the objects its workers hold): an edit of one record of a
50,000-name zone hands over two names, not 50,000. A zone that comes whole (new, signed,
or the first load's repacking) comes in pieces of a few hundred names, each decoded with
the interpreter let go in between, and with the collector paused (the decoded data has
no cycles): a query waits for one piece at most.

Frames on the wire: a 4-byte length, then a pickle. The first frame of an update says
what is in it; the pieces of the changed zones follow in the order it lists them.
"""

from __future__ import annotations

import copy
import copyreg
import gc
import logging
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

from .model import DynamicRRset, Problem, ZoneData, dynamic_sources, immutable_rdataset, names_with_ancestors

REPACK_NODES = 1000  # a zone with more names than this is built again packed after the first load
PIECE = 200  # names per piece: one decodes in about a millisecond
PAUSE = 0.0002  # seconds the decoding thread lets the answering threads run between pieces
LENGTH = struct.Struct("!I")

log = logging.getLogger(__name__)


def _mapping(data: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(data)


def _rdataset(rdtype: int, ttl: int, rdatas: tuple[dns.rdata.Rdata, ...]) -> dns.rdataset.ImmutableRdataset:
    return immutable_rdataset(dns.rdatatype.RdataType.make(rdtype), ttl, rdatas)


# The model's read-only mappings and dnspython's immutable rdatasets cannot be pickled as they are.
copyreg.pickle(MappingProxyType, lambda m: (_mapping, (dict(m),)))
copyreg.pickle(dns.rdataset.ImmutableRdataset, lambda r: (_rdataset, (int(r.rdtype), r.ttl, tuple(r))))


class StaleBase(Exception):
    """An update changes a version of a zone the receiver does not have (the two sides disagree)."""


@dataclass(frozen=True)
class Changed:
    """A changed zone in an update; the frames of its nodes, then of its names, follow in this order."""

    path: str
    shell: ZoneData  # the zone without names, nodes and dynamic records
    node_pieces: int
    name_pieces: int
    variants: dict[tuple[bytes, int], Any]  # a signed zone's dynamic signatures by (owner, type)
    # The receiver's version (its stamp) when only a difference comes: the nodes that follow replace
    # that version's, `removed` names go, and the names that follow are added to its names and
    # `names_removed` taken out of them. None: the whole zone follows.
    base: tuple[object, ...] | None = None
    removed: tuple[bytes, ...] = ()
    names_removed: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Update:
    """One load's outcome, as the receiver applies it."""

    order: tuple[str, ...]  # every zone file served, in load order
    unchanged: tuple[str, ...]  # of those, the ones the receiver already has as they are
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    kept: tuple[str, ...]
    changed: tuple[Changed, ...]
    reason: str = ""  # why the sender loaded
    parsed: int = 0  # files the sender parsed again


def encode(zones: Mapping[str, ZoneData], previous: Mapping[str, ZoneData], problems: tuple[Problem, ...],
           warnings: tuple[Problem, ...], kept: tuple[str, ...], reason: str, parsed: int) -> list[bytes]:
    """The frames of an update from `previous` (what the receiver has) to `zones`."""
    unchanged = tuple(path for path, zone in zones.items() if previous.get(path) is zone)
    pieces: list[bytes] = []
    changed = []
    for path, zone in zones.items():
        held = previous.get(path)
        if held is zone:
            continue
        difference = _difference(held, zone) if held is not None else None
        base: tuple[object, ...] | None = None
        removed: tuple[bytes, ...] = ()
        names_removed: tuple[bytes, ...] = ()
        if difference is None:
            nodes = list(zone.nodes.items())
            names = sorted(zone.names)
        else:
            assert held is not None
            base, (keys, removed, before) = held.stamp, difference
            nodes = [(key, zone.nodes[key]) for key in keys]
            names = []
            if removed or any(key not in before for key in keys):  # names come or go: so may their ancestors
                had = names_with_ancestors(before, len(zone.wire))
                names, names_removed = sorted(zone.names - had), tuple(had - zone.names)
        node_pieces = [_dump(dict(nodes[i:i + PIECE])) for i in range(0, len(nodes), PIECE)]
        name_pieces = [_dump(names[i:i + PIECE * 4]) for i in range(0, len(names), PIECE * 4)]
        shell, variants = _portable(replace(zone, nodes=MappingProxyType({}), names=frozenset(), dynamic=(),
                                            digests=None), zone)
        changed.append(Changed(path, shell, len(node_pieces), len(name_pieces), variants, base, removed,
                               names_removed))
        pieces += node_pieces + name_pieces
    update = Update(tuple(zones), unchanged, problems, warnings, kept, tuple(changed), reason, parsed)
    return [_dump(update)] + pieces


def _difference(held: ZoneData, zone: ZoneData) -> tuple[list[bytes], tuple[bytes, ...], Mapping[bytes, Any]] | None:
    """The names of `zone` whose nodes are not as in the receiver's version `held`, the names of `held`
    that are gone, and `held`'s names (a mapping by name); None when the zone must go whole."""
    if held.dnssec is not None or zone.dnssec is not None or not held.stamp or held.wire != zone.wire:
        return None  # a signed zone's chain and signatures are rebuilt at every load
    before: Mapping[bytes, Any]
    now: Mapping[bytes, Any]
    if held.digests is not None and zone.digests is not None:  # the loader: it keeps digests of what it sent
        before, now = held.digests, zone.digests
        keys = [key for key, digest in now.items() if before.get(key) != digest]
    elif held.nodes:  # the supervisor: it holds what its workers hold, and unchanged names keep their objects
        before, now = held.nodes, zone.nodes
        keys = [key for key, node in now.items() if before.get(key) is not node]
    else:
        return None
    if zone.wire not in keys:
        keys.append(zone.wire)  # the apex holds the SOA, whose serial follows the content
    return keys, tuple(key for key in before if key not in now), before


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
    count = sum(change.node_pieces + change.name_pieces for change in update.changed)
    return [first] + [read_frame(read) for _ in range(count)]


def decode(frames: list[bytes], previous: Mapping[str, ZoneData],
           pause: float = PAUSE) -> tuple[dict[str, ZoneData], Update]:
    """The zones an update describes, the unchanged ones taken from `previous` (call from a thread
    other than the answering ones: it pauses between pieces so that they run)."""
    update: Update = pickle.loads(frames[0])
    built: dict[str, ZoneData] = {}
    at = 1
    decoded = 0
    interval = sys.getswitchinterval()
    # Decoded data has no cycles, and a full collection now would walk the old and the new with the
    # interpreter held: the collector stays off until the caller has frozen the new data (gc.freeze).
    gc.disable()
    sys.setswitchinterval(0.001)  # an answering thread that wants the interpreter gets it within 1 ms
    try:
        for change in update.changed:
            path = change.path
            had = previous.get(path)
            before = had.nodes if had is not None else {}
            nodes: dict[bytes, Any] = {}
            dynamic: list[DynamicRRset] = []  # the same objects as in the nodes: found piece by piece
            replaced: set[int] = set()  # of a difference: the records of `had` that go
            if change.base is not None:
                if had is None or had.stamp != change.base:
                    raise StaleBase(f"{path}: the update changes a version of the zone not held here")
                # one copy in C: a few milliseconds for 50,000 names (dict() of the proxy takes 4 times that)
                nodes = before.copy() if isinstance(before, MappingProxyType) else dict(before)
                for key in change.removed:
                    replaced.update(id(source) for source in nodes.pop(key).values())
            for _ in range(change.node_pieces):
                piece = pickle.loads(frames[at])
                for key, node in piece.items():  # a name that did not change keeps the objects it had
                    held = before.get(key)
                    if held is not None:
                        if change.base is not None:
                            replaced.update(id(source) for source in held.values())
                        if _same_node(held, node):
                            piece[key] = held
                nodes.update(piece)
                decoded += len(piece)
                dynamic += dynamic_sources(piece.values())
                at += 1
                time.sleep(pause)
            names: list[bytes] = []
            for _ in range(change.name_pieces):
                names += pickle.loads(frames[at])
                at += 1
                time.sleep(pause)
            shell = change.shell
            _signatures_by_identity(shell, nodes, change.variants)
            if had is not None and change.base is not None:
                dynamic[:0] = [source for source in had.dynamic if id(source) not in replaced]
                every = had.names if not names and not change.names_removed else \
                    had.names.difference(change.names_removed).union(names)
            else:
                every = frozenset(names)
            built[path] = replace(shell, nodes=MappingProxyType(nodes), names=every, dynamic=tuple(dynamic))
    except BaseException:
        gc.enable()
        raise
    finally:
        sys.setswitchinterval(interval)
    zones = {}
    for path in update.order:
        zones[path] = built[path] if path in built else previous[path]
    if update.changed:
        log.debug("handover: %d zones changed (%d whole), %d names decoded", len(update.changed),
                  sum(change.base is None for change in update.changed), decoded)
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
