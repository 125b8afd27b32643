"""Replaced zone data and spent caches, freed a little at a time.

When a reload replaces a zone, its old version is freed by reference counting
at the moment its last reference goes, in one cascade of deallocations that
holds the interpreter: 25 ms for a 50,000-record zone, during which no query is
answered. Here the old versions are kept a few seconds (queries that took the
old state finish with it), then their nodes are dropped a few hundred at a
time from a thread, with pauses in between in which the answering threads run.

A zone is taken apart only when nothing but this module still holds it (its
reference count says so); a zone still held elsewhere is left to be freed
normally, whenever its last holder lets go.

A full hot cache is emptied the same way (`release`): its 30,000 entries and
their decisions are 360,000 objects, 50-70 ms of freeing in one go.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from itertools import islice
from typing import Any, Iterable

from .model import ZoneData

log = logging.getLogger(__name__)

PIECE = 500  # nodes freed at once: about a quarter of a millisecond
PAUSE = 0.002  # seconds between pieces, for the answering threads
GRACE = 3.0  # seconds a replaced zone is kept whole: queries that took the old state finish with it


def retire(zones: Iterable[ZoneData], grace: float = GRACE) -> threading.Thread | None:
    """Take these replaced zones apart in the background after `grace` seconds."""
    held = [zone for zone in zones if len(zone.nodes) > PIECE]  # small zones free in no time anyway
    if not held:
        return None
    thread = threading.Thread(target=_take_apart, args=(held, grace), name="retire", daemon=True)
    thread.start()
    return thread


def _take_apart(held: list[ZoneData], grace: float) -> None:
    time.sleep(grace)
    while held:
        zone = held.pop()
        origin = zone.text
        # references: `zone`, the getrefcount argument; anything more is another holder
        nodes = _mapping_behind(zone.nodes) if sys.getrefcount(zone) <= 2 else None
        if nodes is None:
            log.debug("replaced zone %s is still held: freed when its last holder lets go", origin)
            continue
        pieces = _empty(nodes)
        del zone
        log.debug("replaced zone %s freed in %d pieces", origin, pieces)


def release(*caches: dict[Any, Any]) -> threading.Thread:
    """Empty these dicts, which no query reaches any more, in the background a piece at a time."""
    thread = threading.Thread(target=_empty_each, args=(caches,), name="release", daemon=True)
    thread.start()
    return thread


def _empty_each(caches: tuple[dict[Any, Any], ...]) -> None:
    for cache in caches:
        _empty(cache)


def _empty(mapping: dict[Any, Any]) -> int:
    """Delete `mapping`'s entries PIECE at a time with a pause between; how many pieces it took."""
    pieces = 0
    while mapping:
        for key in list(islice(mapping, PIECE)):
            mapping.pop(key, None)
        pieces += 1
        time.sleep(PAUSE)
    return pieces


def _mapping_behind(view: object) -> dict[object, object] | None:
    """The dict behind a read-only view (MappingProxyType), which only this module, holding the
    zone's last reference, may empty: no query can see it any more."""
    behind = [referent for referent in gc.get_referents(view) if type(referent) is dict]
    return behind[0] if len(behind) == 1 else None
