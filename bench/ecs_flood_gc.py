#!/usr/bin/env python3
"""Garbage-collection pauses while an answering process meets a flood of new ECS clients.

    python3 bench/ecs_flood_gc.py --queries 60000 --policy python     # Python's collector as it comes
    python3 bench/ecs_flood_gc.py --queries 60000 --policy smartdns   # collector.py's policy

In-process: a 50,000-record zone (bench/scale.py's) is loaded and frozen as the server does, then
one Responder answers `--queries` queries for its dynamic record, each with a new ECS subnet (every
one a new hot-cache entry, decision and located client). Prints each generation's collections with
their longest and total pause (wall clock), and the objects left for the collector at the end.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scale import big_zone, make_query, random_ecs, write_zone

from smartdns.collector import keep_full_collections_short
from smartdns.config import load_config
from smartdns.hotcache import Responder
from smartdns.server import build_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=60_000)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--policy", choices=("python", "smartdns"), default="smartdns")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartdns-gc-") as tmp:
        zones = Path(tmp) / "zones"
        zones.mkdir()
        write_zone(zones, "big.test", big_zone("big.test", args.records))
        state = build_state(load_config(None, zones=str(zones)))[0]
    responder = Responder(state, counting=False)
    gc.collect()
    gc.freeze()  # as after every load
    if args.policy == "smartdns":
        keep_full_collections_short()
    pauses: list[tuple[int, float]] = []
    started: list[float] = []

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        else:
            pauses.append((info["generation"], time.perf_counter() - started.pop()))

    gc.callbacks.insert(0, timed)  # first, so that the policy's own work counts in the pause
    rng = random.Random(1)
    begin = time.perf_counter()
    for i in range(args.queries):
        responder.respond(make_query(i % 65536, "mx.big.test", 1, random_ecs(rng)), "127.0.0.1", True)
    elapsed = time.perf_counter() - begin
    gc.callbacks.remove(timed)
    print(f"policy {args.policy}: {args.queries} new ECS clients answered in {elapsed:.2f} s")
    for generation in (0, 1, 2):
        times = sorted((p for g, p in pauses if g == generation), reverse=True)
        if times:
            print(f"  generation {generation}: {len(times)} collections, longest {times[0] * 1000:.1f} ms, "
                  f"next {', '.join(f'{t * 1000:.1f}' for t in times[1:4])} ms, total {sum(times) * 1000:.0f} ms")
    print(f"  objects left for the collector: {len(gc.get_objects())} (frozen {gc.get_freeze_count()})")


if __name__ == "__main__":
    main()
