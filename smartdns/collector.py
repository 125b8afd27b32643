"""Python's garbage collector in an answering process: full collections kept short.

The loaded zones are frozen out of the collector's reach after every load (reload.py), but an
answering process makes long-lived objects as it serves: hot-cache entries, decisions and located
clients (a flood of new ECS clients fills those caches: 360,000 objects) and a big zone's records
made into rdata when first asked for. A full collection walks every one of them with the
interpreter held, and Python starts one whenever they have grown by a quarter: 300-380 ms
pauses measured while 60,000 new ECS clients were answered (bench/ecs_flood_gc.py).

Here full collections come more often (after every second collection of the middle generation,
not every eleventh), so each walks less, and when one leaves more than FREEZE_AT objects behind,
they are frozen too (gc.freeze): the next walks only what came since. A frozen object is still
freed when its last reference goes, as cache entries are when a cache is cleared; what it
costs is that a reference cycle it joins after being frozen is never collected. That is why
small heaps (ordinary serving) are never frozen here: only growth that a full collection could
not walk quickly, which a reload would have frozen anyway (every load ends with gc.freeze).
"""

from __future__ import annotations

import gc
from typing import Any

FREEZE_AT = 10000  # objects left after a full collection beyond which they are frozen (~10 ms to walk)
MIDDLE_PER_FULL = 1  # middle-generation collections before a full one (Python's default: 10)


def keep_full_collections_short() -> None:
    """Install the policy in this process (once: an answering process, after its first load)."""
    if _after_full in gc.callbacks:
        return
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, MIDDLE_PER_FULL)
    gc.callbacks.append(_after_full)
    # Python waits for the long-lived objects to grow by a quarter of what the last full collection
    # left, counting what has been frozen since: one now (of the little not frozen) starts the count
    # afresh, or the first one would wait for, and walk, tens of thousands of objects
    gc.collect()


def _after_full(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2 and len(gc.get_objects(2)) > FREEZE_AT:
        gc.freeze()  # the survivors of the collection just made, and nothing else, are in the generations now
