"""`smartdns dnssec keygen | ds | status | rollover | remove`: key files and their timing.

The server reads only the files; these commands write them. Every server given
the same files derives the same keys, DS and signatures, so running a command
once and shipping the files (git, a ConfigMap) changes every server alike.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.rrset

from ..config import Config
from ..model import DynamicRRset
from . import keys
from .sign import window_at


class CommandError(Exception):
    pass


def run(args: argparse.Namespace, config: Config, now: float | None = None) -> int:
    now = int(time.time()) if now is None else int(now)
    directory = config.dnssec_keys
    command = args.dnssec_command
    if command == "status":
        return status(config, now)
    zone = _zone_name(args.zone)
    if command == "keygen":
        return keygen(directory, zone, args.algorithm, now)
    if command == "ds":
        return print_ds(directory, zone, now)
    if command == "rollover":
        return rollover(config, zone, now, args.propagation, args.ds_wait)
    return remove(config, zone, now, args.ds_wait)


def _zone_name(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text.rstrip(".") + ".")
    except dns.exception.DNSException as exc:
        raise CommandError(f"{text!r} is not a zone name: {exc}") from None


def _load(directory: Path, zone: dns.name.Name) -> list[keys.ZoneKey]:
    found, problems = keys.load(directory, zone)
    if problems:
        raise CommandError("\n".join(problems))
    return found


def _when(value: int | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))


def keygen(directory: Path, zone: dns.name.Name, algorithm: int, now: int) -> int:
    current = [k for k in _load(directory, zone) if k.timing.delete is None or k.timing.delete > now]
    if current:
        raise CommandError(f"{zone} already has key {current[0].path.name}: use `smartdns dnssec rollover {zone}` "
                           "to replace it")
    key = keys.generate(zone, algorithm, directory, now)
    print(f"wrote {key.key_path} and {key.path} (mode 0600)")
    print("; give this DS to the registrar (or let it read the zone's CDS):")
    print(_ds_text(zone, [key]))
    return 0


def _ds_text(zone: dns.name.Name, zone_keys: list[keys.ZoneKey]) -> str:
    ds = [dns.dnssec.make_ds(zone, k.dnskey, "SHA256") for k in sorted(zone_keys, key=lambda k: k.tag)]
    return dns.rrset.from_rdata_list(zone, 3600, ds).to_text()


def print_ds(directory: Path, zone: dns.name.Name, now: int) -> int:
    zone_keys = _load(directory, zone)
    in_sync = [k for k in zone_keys if k.in_sync(now)] or [k for k in zone_keys if k.active(now)]
    if not in_sync:
        raise CommandError(f"{zone} has no key in use in {directory} (`smartdns dnssec keygen {zone}` makes one)")
    print(_ds_text(zone, in_sync))
    return 0


def status(config: Config, now: int) -> int:
    from ..reload import zone_files

    served = {p.name[: -len(".yaml")].lower().rstrip(".") + "." for p in zone_files(config.zones)}
    with_keys = set(keys.zones_with_keys(config.dnssec_keys))
    window = window_at(now)
    print(f"keys in {config.dnssec_keys}; signing window {_when(window.start)} to {_when(window.end)} UTC, "
          f"signatures valid {_when(window.inception)} to {_when(window.expiration)}")
    for name in sorted(served | with_keys):
        zone = dns.name.from_text(name)
        zone_keys, problems = keys.load(config.dnssec_keys, zone)
        signed = any(k.active(now) or k.signs_keys(now) for k in zone_keys)
        where = "" if name in served else " (no zone file)"
        print(f"{name}{where}: {'signed' if signed else 'unsigned'}")
        for key in sorted(zone_keys, key=lambda k: k.timing.created):
            t = key.timing
            print(f"  {key.path.name}: {key.state(now)}, alg {key.algorithm}; publish {_when(t.publish)}, "
                  f"activate {_when(t.activate)}, inactive {_when(t.inactive)}, delete {_when(t.delete)}, "
                  f"CDS {_when(t.sync_publish)} to {_when(t.sync_delete)}")
        events = sorted(e for k in zone_keys for e in k.events() if e > now)
        if events:
            print(f"  next key event {_when(events[0])} UTC")
        for problem in problems:
            print(f"  problem: {problem}")
    return 0


def _max_ttl(config: Config, zone: dns.name.Name) -> int:
    """The zone's largest TTL (what caches may hold signed by the old key), 1 day if it cannot be read."""
    from ..reload import load_all

    for data in load_all(config).zones.values():
        if data.origin == zone:
            ttls = [data.soa.ttl]
            for node in data.nodes.values():
                for source in node.values():
                    ttls.append(source.ttl if isinstance(source, DynamicRRset) else source.rdataset.ttl)
            return max(ttls)
    return 86400


def rollover(config: Config, zone: dns.name.Name, now: int, propagation: int, ds_wait: int) -> int:
    """RFC 7583 3.3 (CSK): pre-publish the new key, switch signing, switch the DS (CDS), drop the old key.

    - new key published now; active (signing) once every cache that holds the DNSKEY RRset
      has seen it: publication + propagation + DNSKEY TTL;
    - the old key stops signing data then, but keeps signing the DNSKEY RRset and stays
      published, so a DS that still names it validates;
    - the CDS moves to the new key at its activation; the old key goes when the parent
      has had `ds_wait` to change the DS and old signatures have left caches (largest TTL).
    """
    zone_keys = _load(config.dnssec_keys, zone)
    current = [k for k in zone_keys if k.active(now)]
    if not current:
        raise CommandError(f"{zone} has no active key to roll over (`smartdns dnssec keygen {zone}` makes one)")
    pending = [k for k in zone_keys if k.timing.activate is not None and k.timing.activate > now]
    if pending or any(k.timing.inactive is not None for k in current):
        raise CommandError(f"{zone}: a rollover is already under way (`smartdns dnssec status` shows it)")
    old = current[-1]
    activate = now + propagation + config.dnskey_ttl
    old_gone = activate + ds_wait + max(_max_ttl(config, zone), config.dnskey_ttl) + propagation
    new = keys.generate(zone, old.algorithm, config.dnssec_keys, now,
                        keys.Timing(created=now, publish=now, activate=activate, sync_publish=activate))
    for key in current:
        keys.with_timing(key, inactive=activate, sync_delete=activate, delete=old_gone)
    print(f"new key {new.path.name}: published now, signs from {_when(activate)} UTC (CDS from then on)")
    print(f"old key {old.path.name}: signs until {_when(activate)}, removed {_when(old_gone)} UTC")
    print("; the DS to give the registrar from the activation on (registries that read CDS do it themselves):")
    print(_ds_text(zone, [new]))
    return 0


def remove(config: Config, zone: dns.name.Name, now: int, ds_wait: int) -> int:
    """RFC 8078 4: the delete CDS now (signed, so the parent believes it), unsigned after `ds_wait`."""
    zone_keys = [k for k in _load(config.dnssec_keys, zone) if k.published(now)]
    if not zone_keys:
        raise CommandError(f"{zone} has no published key")
    gone = now + ds_wait + max(_max_ttl(config, zone), config.dnskey_ttl)
    for key in zone_keys:
        keys.with_timing(key, sync_delete=now, inactive=gone, delete=gone)
    print(f"{zone}: delete CDS/CDNSKEY published now; served unsigned from {_when(gone)} UTC "
          "(remove the DS at the registrar if it does not read CDS)")
    return 0
