"""A reload's handover keeps the objects of every name that did not change, and carries only the names that
changed when the sender knows what the receiver has (one edit costs what it changed)."""

from __future__ import annotations

import gc
import pickle
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator

import dns.rcode
import pytest
import yaml

from conftest import wait_for
from smartdns.config import SoaSettings
from smartdns.handover import StaleBase, decode, encode
from smartdns.model import StaticRRset, ZoneData
from smartdns.zonefile import load_zone


def zone_file(tmp_path: Path, edit: str, extra: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> Path:
    data = {"": {"type": "NS", "values": ["ns1.example.com.", "ns2.example.com."]},
            "mx": {"type": "A", "ttl": 60, "values": ["10.9.0.1", "10.9.0.2"],
                   "dynamic": {"pools": {"one": {"values": [{"value": "10.9.0.1"}]}},
                               "rules": [{"pool": "one", "subnets": ["10.0.0.0/8"]}, {"pool": "one"}]}}}
    data.update({f"host{i}": {"type": "A", "value": f"10.0.{i // 256}.{i % 256}"} for i in range(1500)})
    data["host7"] = {"type": "A", "value": edit}
    data.update(extra or {})
    for name in drop:
        del data[name]
    path = tmp_path / f"{edit}-{len(data)}" / "example.com.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(data))
    return path


def test_unchanged_names_keep_their_objects_and_the_edit_is_served(tmp_path: Path) -> None:
    served = load_zone(zone_file(tmp_path, "10.250.0.1"), SoaSettings())
    edited = load_zone(zone_file(tmp_path, "10.250.0.2"), SoaSettings())
    zones, _ = decode(encode({"z": edited}, {"z": served}, (), (), (), "test", 1), {"z": served}, pause=0)
    new = zones["z"]
    host7 = b"\x05host7\x07example\x03com\x00"
    kept = [key for key, node in new.nodes.items() if node is served.nodes.get(key)]
    assert len(kept) == len(new.nodes) - 2  # all but the edited name and the apex (its SOA serial changed)
    assert host7 not in kept and new.nodes[host7] is not served.nodes[host7]
    source = new.nodes[host7][1]
    assert isinstance(source, StaticRRset) and [r.address for r in source.rdataset] == ["10.250.0.2"]
    assert new.dynamic and new.dynamic[0] is new.nodes[b"\x02mx\x07example\x03com\x00"][1]
    assert new.serial == edited.serial and new.names == edited.names


@pytest.fixture(autouse=True)
def collector_back_on() -> Iterator[None]:
    """decode() leaves the collector off for its caller to freeze the data first: these tests turn it back on."""
    yield
    gc.enable()


def load(path: Path, version: str) -> ZoneData:
    return replace(load_zone(path, SoaSettings()), stamp=(version,))  # as reload.load_all stamps the file


def loader_view(zone: ZoneData) -> ZoneData:
    """What the loader keeps of a zone it handed over: no names or records, each name's digest."""
    return replace(zone, nodes=MappingProxyType({}), names=frozenset(), dynamic=())


def served_copy(zone: ZoneData) -> ZoneData:
    """What the answering process holds: the zone as decoded from a whole handover, without digests."""
    zones, _ = decode(encode({"z": zone}, {}, (), (), (), "", 1), {}, pause=0)
    return zones["z"]


def handed(frames: list[bytes]) -> int:
    return len(frames) - 1  # the frames after the update's own


ADDED = {"a.b.new": {"type": "A", "value": "10.7.0.1"}}


@pytest.mark.parametrize("extra, drop", [({}, ()), (ADDED, ()), ({}, ("host9",))],
                         ids=["edit", "add", "remove"])
def test_only_the_changed_names_cross_and_the_result_is_the_whole_zone(tmp_path: Path, extra, drop) -> None:
    old = load(zone_file(tmp_path, "10.250.0.1"), "v1")
    new = load(zone_file(tmp_path, "10.250.0.2", extra, drop), "v2")
    held = served_copy(old)
    frames = encode({"z": new}, {"z": loader_view(old)}, (), (), (), "test", 1)
    assert handed(frames) <= 2  # one piece of nodes (the apex and the changed names), at most one of names
    zones, update = decode(frames, {"z": held}, pause=0)
    got = zones["z"]
    whole = served_copy(new)
    assert got.nodes.keys() == whole.nodes.keys() and got.names == whole.names == new.names
    assert all(got.nodes[key] == whole.nodes[key] for key in whole.nodes)
    kept = [key for key, node in got.nodes.items() if node is held.nodes.get(key)]
    assert len(kept) == len(got.nodes) - 2 - len(extra)  # all but the apex, host7 and what was added
    assert got.serial == new.serial and got.digests is None
    assert [d.name for d in got.dynamic] == ["mx"] and got.dynamic[0] is got.nodes[b"\x02mx\x07example\x03com\x00"][1]
    if drop:
        assert b"\x05host9\x07example\x03com\x00" not in got.nodes
    if extra:  # the added name's empty ancestor exists now, and goes again when the name does
        assert b"\x01b\x03new\x07example\x03com\x00" in got.names
        back = load(zone_file(tmp_path, "10.250.0.3"), "v3")
        frames = encode({"z": back}, {"z": loader_view(new)}, (), (), (), "test", 1)
        again, _ = decode(frames, {"z": got}, pause=0)
        assert again["z"].names == back.names and b"\x01b\x03new\x07example\x03com\x00" not in again["z"].names


def test_the_supervisor_sends_its_workers_the_names_whose_objects_changed(tmp_path: Path) -> None:
    old = served_copy(load(zone_file(tmp_path, "10.250.0.1"), "v1"))
    new = load(zone_file(tmp_path, "10.250.0.2"), "v2")
    # the supervisor got `new` from its loader as a difference: its unchanged names are `old`'s objects
    from_loader, _ = decode(encode({"z": new}, {"z": loader_view(old)}, (), (), (), "", 1), {"z": old}, pause=0)
    frames = encode(from_loader, {"z": old}, (), (), (), "test", 1)
    assert handed(frames) == 1 and len(pickle.loads(frames[1])) == 2  # the apex and host7
    worker, _ = decode(frames, {"z": old}, pause=0)
    assert worker["z"].nodes == from_loader["z"].nodes and worker["z"].names == new.names


def test_a_difference_from_a_version_not_held_is_refused(tmp_path: Path) -> None:
    old = load(zone_file(tmp_path, "10.250.0.1"), "v1")
    new = load(zone_file(tmp_path, "10.250.0.2"), "v2")
    frames = encode({"z": new}, {"z": loader_view(old)}, (), (), (), "test", 1)
    other = served_copy(replace(old, stamp=("v0",)))  # the receiver missed v1
    with pytest.raises(StaleBase, match="not held here"):
        decode(frames, {"z": other}, pause=0)


def test_a_zone_the_receiver_does_not_have_comes_whole(tmp_path: Path) -> None:
    new = load(zone_file(tmp_path, "10.250.0.2"), "v2")
    frames = encode({"z": new}, {}, (), (), (), "test", 1)
    assert handed(frames) > 5  # 1,500 names in pieces
    zones, _ = decode(frames, {}, pause=0)
    assert zones["z"].nodes == served_copy(new).nodes


BIG = "\n".join(["'':", "  type: NS", "  values: [ns1.example.com., ns2.example.com.]"]
                + [f"host{i}:\n  type: A\n  value: 10.1.{i // 256}.{i % 256}" for i in range(3000)]) + "\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_served_edit_hands_over_the_changed_names_only(smartdns, workers: int) -> None:
    server = smartdns(zones={"example.com": BIG}, args=("--workers", str(workers), "--log-level", "debug"))
    address = lambda name: [r.address for r in server.query(name).answer[0]]  # noqa: E731
    assert address("host7.example.com.") == ["10.1.0.7"]
    server.write_zone("example.com", BIG.replace("value: 10.1.0.7\n", "value: 10.9.9.9\n")
                      .replace("host0:", "a.b.new:\n  type: A\n  value: 10.7.0.1\nhost0:"))
    wait_for(lambda: address("host7.example.com.") == ["10.9.9.9"], 20)
    # the apex, host7 and the new name: in the serving process (and each worker), not 3,003 names
    server.wait_for_log(r"handover: 1 zones changed \(0 whole\), 3 names decoded")
    assert address("a.b.new.example.com.") == ["10.7.0.1"]
    empty = server.query("b.new.example.com.")  # the new name's ancestor: NODATA, not NXDOMAIN
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer
    server.write_zone("example.com", BIG)
    wait_for(lambda: server.query("b.new.example.com.").rcode() == dns.rcode.NXDOMAIN, 20)
    assert address("host7.example.com.") == ["10.1.0.7"] and address("host2999.example.com.") == ["10.1.11.183"]
