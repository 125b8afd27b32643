"""collector.py: a flood of new ECS clients leaves little for a full collection to walk, what was frozen is
still freed with the caches, and answering makes no reference cycles (which freezing would keep forever)."""

from __future__ import annotations

import gc
import random
from pathlib import Path
from typing import Iterator

import pytest

from smartdns.collector import FREEZE_AT, keep_full_collections_short
from smartdns.config import load_config
from smartdns.hotcache import Responder
from smartdns.server import build_state

ZONE = """\
'':
  type: NS
  values: [ns1.example.com., ns2.example.com.]
mx:
  dynamic:
    pools:
      domestic:
        values:
        - value: 10.9.0.1
      overseas:
        values:
        - value: 10.9.0.2
    rules:
    - pool: domestic
      subnets: [20.0.0.0/8]
    - pool: overseas
  type: A
  values: [10.9.0.1, 10.9.0.2]
www:
  type: A
  value: 10.1.0.1
"""


def query(qid: int, name: str, ecs: tuple[int, int, int] | None = None, flags: int = 0x0100) -> bytes:
    """A query in wire form, with an ECS option (address as an int, source prefix, scope) if given."""
    qname = b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + b"\x00"
    packet = qid.to_bytes(2, "big") + flags.to_bytes(2, "big") + b"\x00\x01\x00\x00\x00\x00\x00\x01"
    packet += qname + b"\x00\x01\x00\x01"
    options = b""
    if ecs is not None:
        address, source, scope = ecs
        data = b"\x00\x01" + bytes((source, scope)) + address.to_bytes(4, "big")[: (source + 7) // 8]
        options = b"\x00\x08" + len(data).to_bytes(2, "big") + data
    return packet + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00" + len(options).to_bytes(2, "big") + options


@pytest.fixture
def responder(tmp_path: Path) -> Iterator[Responder]:
    (tmp_path / "example.com.yaml").write_text(ZONE)
    state = build_state(load_config(None, zones=str(tmp_path)))[0]
    thresholds, callbacks, enabled = gc.get_threshold(), list(gc.callbacks), gc.isenabled()
    gc.enable()  # as in a serving process (a test that decoded a handover may have left it off)
    gc.collect()
    gc.freeze()  # as after every load
    try:
        yield Responder(state, counting=False)
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks[:] = callbacks
        gc.unfreeze()
        if not enabled:
            gc.disable()


def new_clients(responder: Responder, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        address = (30 << 24) + (i << 8)  # a /24 of its own in 30.0.0.0/8
        responder.respond(query(i % 65536, "mx.example.com", (address, 24, 0)), "127.0.0.1", True)


def test_a_flood_of_new_ecs_clients_leaves_little_for_a_full_collection(responder: Responder) -> None:
    keep_full_collections_short()
    frozen_before = gc.get_freeze_count()
    new_clients(responder, 20_000)
    state = responder.state
    assert len(state.hot_udp) == 20_000 and len(state.decisions) == 20_000
    made = gc.get_freeze_count() - frozen_before + len(gc.get_objects())
    assert made > 150_000  # what the caches hold: Python's own policy would leave all of it to walk
    # what a full collection would walk now: at most what FREEZE_AT lets stay, and what came since
    assert len(gc.get_objects()) < FREEZE_AT + 20_000
    frozen = gc.get_freeze_count()
    state.hot_udp.clear()
    state.decisions = {}
    state.classifier.close()  # its cache of located clients goes with it
    assert frozen - gc.get_freeze_count() > 100_000  # frozen, and still freed when the caches let go


def test_answering_makes_no_reference_cycles(responder: Responder) -> None:
    """Freezing keeps a cycle that is formed after it forever: answering must form none."""
    rng = random.Random(2)
    packets = [query(7, "mx.example.com", (rng.randrange(1 << 24, 224 << 24) & ~0xFF, 24, 0)) for _ in range(50)]
    packets += [query(8, "www.example.com"), query(9, "nothere.example.com"), query(10, "www.example.org"),
                query(11, "mx.example.com"), query(12, "mx.example.com", (20 << 24, 24, 0)),
                query(13, "www.example.com", flags=0x0000), b"\x00\x01garbage", b"", query(14, "a" * 63 + ".com")]
    enabled = gc.isenabled()
    gc.disable()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for packet in packets * 3:
            responder.respond(packet, "127.0.0.1", True)
            responder.respond(packet, "127.0.0.1", False)
        state = responder.state
        state.hot_udp.clear()
        state.hot_tcp.clear()
        state.decisions = {}
        gc.collect()
        assert [type(o).__name__ for o in gc.garbage] == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def test_a_full_hot_cache_is_emptied_in_the_background_and_serving_goes_on(responder: Responder, monkeypatch) -> None:
    import threading
    import time

    import smartdns.hotcache as hotcache

    monkeypatch.setattr(hotcache, "HOT_LIMIT", 2000)
    new_clients(responder, 2000)
    state = responder.state
    assert len(state.hot_udp) == 2000 and len(state.decisions) == 2000
    held = state.decisions
    new_clients(responder, 1, first=2000)  # the 2,001st: the cache starts afresh, the spent one is emptied by a thread
    assert len(state.hot_udp) == 1 and state.decisions is not held and len(state.decisions) == 1
    deadline = time.monotonic() + 10
    while any(t.name == "release" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held == {}  # emptied, so its entries are freed
    assert [hit for hit in gc.get_objects() if type(hit).__name__ == "DynamicHit"] == list(state.hot_udp.values())
