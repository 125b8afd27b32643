"""Replaced zones are freed a piece at a time, and only when nothing else holds them."""

from __future__ import annotations

from pathlib import Path

import yaml

from smartdns.config import SoaSettings
from smartdns.retire import PIECE, retire
from smartdns.zonefile import load_zone


def big_zone(tmp_path: Path, records: int) -> Path:
    data = {"": {"type": "NS", "values": ["ns1.example.com.", "ns2.example.com."]}}
    data.update({f"host{i}": {"type": "A", "value": f"10.0.{i // 256}.{i % 256}"} for i in range(records)})
    path = tmp_path / "example.com.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_zone_no_one_holds_is_taken_apart(tmp_path: Path) -> None:
    zone = load_zone(big_zone(tmp_path, 3 * PIECE), SoaSettings())
    nodes = zone.nodes  # the view stays readable: it shows what is left
    thread = retire([zone], grace=0.5)  # time for the `del` below: the retirer looks only after the grace
    del zone
    assert thread is not None
    thread.join(10)
    assert len(nodes) == 0


def test_a_zone_still_held_is_left_whole(tmp_path: Path) -> None:
    zone = load_zone(big_zone(tmp_path, 3 * PIECE), SoaSettings())
    count = len(zone.nodes)
    thread = retire([zone], grace=0)
    assert thread is not None
    thread.join(10)
    assert len(zone.nodes) == count
    assert zone.nodes[zone.wire] is not None  # the apex still answers
