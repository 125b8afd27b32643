"""Zone keys in BIND's file format: `K<zone>.+<alg>+<tag>.key` and `.private`.

One CSK (flags 257) per zone signs everything. The files are the ones
`dnssec-keygen` writes, so ldns, Knot's `keymgr import-bind` and
`pdnsutil import-zone-key` read them, and the timing metadata (Created,
Publish, Activate, Inactive, Delete, SyncPublish, SyncDelete) lives in them:
every server derives the same DNSKEY set and active key from files and clock.
This is the only module that imports `cryptography` (to turn BIND's raw private
key bytes into key objects); dnspython signs.
"""

from __future__ import annotations

import base64
import calendar
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from dns.dnssecalgs import get_algorithm_cls
from dns.dnssecalgs.base import GenericPrivateKey
from dns.rdtypes.ANY.DNSKEY import DNSKEY

ECDSAP256SHA256 = 13
ED25519 = 15
ALGORITHM_NAMES = {ECDSAP256SHA256: "ECDSAP256SHA256", ED25519: "ED25519"}
CSK_FLAGS = 257  # ZONE + SEP: one key signs the DNSKEY RRset and the zone
TIMING_FIELDS = ("Created", "Publish", "Activate", "Inactive", "Delete", "SyncPublish", "SyncDelete")
_FILE_NAME = re.compile(r"^K(?P<zone>.+)\+(?P<alg>\d{3})\+(?P<tag>\d{5})\.(?P<kind>key|private)$")


class KeyFileError(Exception):
    """A key file that is missing, unreadable or does not match its pair; names the file."""


@dataclass(frozen=True, slots=True)
class Timing:
    """When a key enters each state, in seconds since the epoch; None: never (BIND's 'unset')."""

    created: int
    publish: int | None = None
    activate: int | None = None
    inactive: int | None = None
    delete: int | None = None
    sync_publish: int | None = None  # CDS/CDNSKEY for this key from then on (RFC 7344)
    sync_delete: int | None = None

    def values(self) -> dict[str, int | None]:
        return dict(zip(TIMING_FIELDS, (self.created, self.publish, self.activate, self.inactive, self.delete,
                                        self.sync_publish, self.sync_delete)))


def _between(start: int | None, end: int | None, now: float) -> bool:
    return start is not None and start <= now and (end is None or now < end)


@dataclass(frozen=True)
class ZoneKey:
    zone: dns.name.Name
    dnskey: DNSKEY
    private: GenericPrivateKey = field(repr=False)
    timing: Timing
    path: Path  # the .private file; the .key file is beside it

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled as its raw private key: the loader process hands signed zones over (smartdns.handover)."""
        return (_key_from_parts, (self.zone, self.dnskey, _raw_private(self.private), self.timing, self.path))

    @property
    def algorithm(self) -> int:
        return int(self.dnskey.algorithm)

    @property
    def tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    @property
    def key_path(self) -> Path:
        return self.path.with_suffix(".key")

    def published(self, now: float) -> bool:
        """In the DNSKEY RRset."""
        return _between(self.timing.publish, self.timing.delete, now)

    def active(self, now: float) -> bool:
        """Signs the zone's RRsets."""
        return _between(self.timing.activate, self.timing.inactive, now) and self.published(now)

    def signs_keys(self, now: float) -> bool:
        """Signs the DNSKEY/CDS/CDNSKEY RRsets: from activation until removal, so a DS that still
        points at a retired key keeps validating until the key is gone (RFC 7583 3.3)."""
        return _between(self.timing.activate, self.timing.delete, now)

    def in_sync(self, now: float) -> bool:
        """Published as CDS/CDNSKEY for the parent."""
        return _between(self.timing.sync_publish, self.timing.sync_delete, now) and self.published(now)

    def events(self) -> list[int]:
        return [t for t in self.timing.values().values() if t is not None]

    def state(self, now: float) -> str:
        if self.active(now):
            return "active"
        if self.published(now):
            return "retired" if self.timing.inactive is not None and self.timing.inactive <= now else "published"
        if self.timing.delete is not None and self.timing.delete <= now:
            return "removed"
        return "created"


def file_stem(zone: dns.name.Name, algorithm: int, tag: int) -> str:
    return f"K{zone.to_text().lower()}+{algorithm:03d}+{tag:05d}"


def _stamp(value: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(value))


def _parse_stamp(text: str) -> int:
    return calendar.timegm(time.strptime(text.strip(), "%Y%m%d%H%M%S"))


def _raw_private(private: GenericPrivateKey) -> bytes:
    key = getattr(private, "key", None)  # the cryptography key inside dnspython's wrapper
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.private_numbers().private_value.to_bytes(32, "big")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.private_bytes_raw()
    raise KeyFileError(f"unsupported key type {type(key).__name__}")


def _key_from_parts(zone: dns.name.Name, dnskey: DNSKEY, raw: bytes, timing: Timing, path: Path) -> ZoneKey:
    return ZoneKey(zone, dnskey, _private_from_raw(int(dnskey.algorithm), raw), timing, path)


def _private_from_raw(algorithm: int, raw: bytes) -> GenericPrivateKey:
    cls = get_algorithm_cls(algorithm)
    if algorithm == ECDSAP256SHA256:
        return cls(key=ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))
    if algorithm == ED25519:
        return cls(key=ed25519.Ed25519PrivateKey.from_private_bytes(raw))
    raise KeyFileError(f"algorithm {algorithm} is not supported (13 ECDSAP256SHA256 or 15 ED25519)")


def generate(zone: dns.name.Name, algorithm: int, directory: Path, now: int | None = None,
             timing: Timing | None = None) -> ZoneKey:
    """A new CSK whose tag no key file in `directory` uses yet; written with mode 0600."""
    if algorithm not in ALGORITHM_NAMES:
        raise KeyFileError(f"algorithm {algorithm} is not supported (13 ECDSAP256SHA256 or 15 ED25519)")
    now = int(time.time()) if now is None else now
    if timing is None:
        timing = Timing(created=now, publish=now, activate=now, sync_publish=now)
    taken = {tag for _, tag in _tags_in(directory)}
    while True:
        private = get_algorithm_cls(algorithm).generate()  # type: ignore[attr-defined]
        dnskey = private.public_key().to_dnskey(flags=CSK_FLAGS)
        tag = dns.dnssec.key_id(dnskey)
        if tag not in taken and (tag + 128) % 65536 not in taken:  # nor a tag a REVOKE bit would take
            break
    key = ZoneKey(zone, dnskey, private, timing, directory / (file_stem(zone, algorithm, tag) + ".private"))
    write(key)
    return key


def _tags_in(directory: Path) -> Iterable[tuple[str, int]]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _FILE_NAME.match(name)
        if match:
            yield match["zone"], int(match["tag"])


def _write_private(path: Path, text: str) -> None:
    """Atomically, mode 0600 from the start (never world-readable, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write(key: ZoneKey) -> None:
    """Both files, as dnssec-keygen writes them (timing in comments of .key and fields of .private)."""
    zone_text = key.zone.to_text().lower()
    timing = [(name, value) for name, value in key.timing.values().items() if value is not None]
    key_text = f"; This is a key-signing key, keyid {key.tag}, for {zone_text}\n"
    key_text += "".join(f"; {name}: {_stamp(value)} ({time.asctime(time.gmtime(value))})\n" for name, value in timing)
    key_text += f"{zone_text} IN DNSKEY {key.dnskey.to_text(chunksize=0)}\n"
    private_text = "Private-key-format: v1.3\n"
    private_text += f"Algorithm: {key.algorithm} ({ALGORITHM_NAMES[key.algorithm]})\n"
    private_text += f"PrivateKey: {base64.b64encode(_raw_private(key.private)).decode()}\n"
    private_text += "".join(f"{name}: {_stamp(value)}\n" for name, value in timing)
    key.path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(key.key_path, key_text)
    _write_private(key.path, private_text)


def with_timing(key: ZoneKey, **changes: int | None) -> ZoneKey:
    """The key with new timing, written to its files."""
    updated = replace(key, timing=replace(key.timing, **changes))  # type: ignore[arg-type]
    write(updated)
    return updated


def read(private_path: Path) -> ZoneKey:
    """One key from its .private file and the .key beside it; KeyFileError says what is wrong and where."""
    match = _FILE_NAME.match(private_path.name)
    if match is None:
        raise KeyFileError(f"{private_path}: not a key file name (K<zone>+<alg>+<tag>.private)")
    key_path = private_path.with_suffix(".key")
    try:
        private_text = private_path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{private_path}: cannot read: {exc.strerror}") from None
    try:
        key_text = key_path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{key_path}: cannot read: {exc.strerror}") from None
    fields: dict[str, str] = {}
    for number, line in enumerate(private_text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise KeyFileError(f"{private_path}:{number}: not a 'Field: value' line")
        fields[name.strip()] = value.strip()
    try:
        algorithm = int(fields["Algorithm"].split()[0])
        raw = base64.b64decode(fields["PrivateKey"], validate=True)
        private = _private_from_raw(algorithm, raw)
        stamps = {name: _parse_stamp(fields[name]) for name in TIMING_FIELDS if name in fields}
    except KeyError as exc:
        raise KeyFileError(f"{private_path}: missing field {exc.args[0]}") from None
    except KeyFileError as exc:
        raise KeyFileError(f"{private_path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{private_path}: unreadable key: {exc}") from None
    zone = dns.name.from_text(match["zone"])
    dnskey = _dnskey_from(key_path, key_text, zone)
    if private.public_key().to_dnskey(flags=dnskey.flags).key != dnskey.key or dnskey.algorithm != algorithm:
        raise KeyFileError(f"{key_path}: its DNSKEY does not match the private key in {private_path.name}")
    if dns.dnssec.key_id(dnskey) != int(match["tag"]) or int(match["alg"]) != algorithm:
        raise KeyFileError(f"{key_path}: the file name says +{match['alg']}+{match['tag']}, the key is "
                           f"+{algorithm:03d}+{dns.dnssec.key_id(dnskey):05d}")
    timing = Timing(
        created=stamps.get("Created", 0), publish=stamps.get("Publish"), activate=stamps.get("Activate"),
        inactive=stamps.get("Inactive"), delete=stamps.get("Delete"),
        sync_publish=stamps.get("SyncPublish"), sync_delete=stamps.get("SyncDelete"),
    )
    return ZoneKey(zone, dnskey, private, timing, private_path)


def _dnskey_from(key_path: Path, text: str, zone: dns.name.Name) -> DNSKEY:
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            owner = dns.name.from_text(parts[0])
            at = parts.index("DNSKEY")
            rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, " ".join(parts[at + 1:]))
        except (ValueError, IndexError, dns.exception.DNSException) as exc:
            raise KeyFileError(f"{key_path}:{number}: not a DNSKEY record: {exc}") from None
        if owner != zone:
            raise KeyFileError(f"{key_path}:{number}: the key is for {owner}, the file name says {zone}")
        assert isinstance(rdata, DNSKEY)
        return rdata
    raise KeyFileError(f"{key_path}: no DNSKEY record")


def key_files(directory: Path, zone: dns.name.Name) -> list[Path]:
    """The .private files of `zone` (sorted), and the .key files without one are reported by `load`."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    out = []
    for name in names:
        match = _FILE_NAME.match(name)
        if match and match["zone"].lower().rstrip(".") == zone.to_text().lower().rstrip("."):
            out.append(directory / name)
    return out


def load(directory: Path, zone: dns.name.Name) -> tuple[list[ZoneKey], list[str]]:
    """Every key of `zone` in `directory`, and a problem line for each file that cannot be used."""
    keys: list[ZoneKey] = []
    problems: list[str] = []
    files = key_files(directory, zone)
    privates = {p.with_suffix("") for p in files if p.suffix == ".private"}
    for path in files:
        if path.suffix == ".key" and path.with_suffix("") not in privates:
            problems.append(f"{path}: no private key file {path.with_suffix('.private').name} beside it")
        if path.suffix != ".private":
            continue
        try:
            keys.append(read(path))
        except KeyFileError as exc:
            problems.append(str(exc))
    algorithms = {k.algorithm for k in keys}
    if len(algorithms) > 1:
        problems.append(f"{directory}: keys of {zone} use algorithms {sorted(algorithms)}: an algorithm rollover "
                        "is not supported, keep one algorithm per zone")
    return keys, problems


def zones_with_keys(directory: Path) -> list[str]:
    return sorted({zone.lower() for zone, _ in _tags_in(directory)})


def check(directory: Path, zones: Iterable[dns.name.Name], now: float) -> tuple[list[str], list[str]]:
    """For `smartdns check`: (problems, warnings) of the key files of the served zones."""
    problems: list[str] = []
    warnings: list[str] = []
    served = set()
    for zone in zones:
        served.add(zone.to_text().lower())
        found, zone_problems = load(directory, zone)
        problems.extend(zone_problems)
        if found and not any(k.published(now) for k in found):
            warnings.append(f"{directory}: {zone} has key files but no key published now: served unsigned")
    for zone_text in zones_with_keys(directory):
        if zone_text not in served:
            warnings.append(f"{directory}: key files for {zone_text}, which no zone file serves")
    return problems, warnings
