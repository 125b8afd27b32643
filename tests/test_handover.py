"""A reload's handover keeps the objects of every name that did not change (one edit costs what it changed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from smartdns.config import SoaSettings
from smartdns.handover import decode, encode
from smartdns.model import StaticRRset
from smartdns.zonefile import load_zone


def zone_file(tmp_path: Path, edit: str) -> Path:
    data = {"": {"type": "NS", "values": ["ns1.example.com.", "ns2.example.com."]},
            "mx": {"type": "A", "ttl": 60, "values": ["10.9.0.1", "10.9.0.2"],
                   "dynamic": {"pools": {"one": {"values": [{"value": "10.9.0.1"}]}},
                               "rules": [{"pool": "one", "subnets": ["10.0.0.0/8"]}, {"pool": "one"}]}}}
    data.update({f"host{i}": {"type": "A", "value": f"10.0.{i // 256}.{i % 256}"} for i in range(1500)})
    data["host7"] = {"type": "A", "value": edit}
    path = tmp_path / edit / "example.com.yaml"
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
