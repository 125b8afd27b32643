"""Client address -> Location (continent, country, subdivision, prefix length).

Sources, first hit wins: the configured .mmdb files in order (GeoIP2/GeoLite2 Country or City,
DB-IP lite), then the embedded RIR country data of `iptocc`, else UNKNOWN. This is the only
module that imports `maxminddb` and `iptocc`, so either can be swapped without touching the rest.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import iptocc
import maxminddb

__all__ = ["Classifier", "GeoDatabaseError", "Location", "UNKNOWN"]


class GeoDatabaseError(Exception):
    """A configured .mmdb file is missing, unreadable or not a MaxMind DB."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Location:
    continent: str | None  # octoDNS continent code, e.g. "AS"
    country: str | None  # ISO 3166-1 alpha-2, e.g. "CN"
    subdivision: str | None  # first subdivision's iso_code, e.g. "CA"
    prefixlen: int | None  # the database network the address fell in (ECS scope); None if no block
    source: str  # "mmdb:<path>", "embedded" or "unknown"

    def matches(self, geo: str) -> bool:
        """Does this location fall in an octoDNS geo code ("AS", "AS-CN", "NA-US-CA")?"""
        parts = geo.split("-")
        if len(parts) > 3:
            return False
        # Each part must equal the known value; a None (unknown) never equals a code,
        # so UNKNOWN matches nothing and a location without a subdivision matches no province.
        return all(p == have for p, have in zip(parts, (self.continent, self.country, self.subdivision)))


UNKNOWN = Location(None, None, None, None, "unknown")


class _Db(NamedTuple):
    source: str
    reader: Any  # maxminddb Reader (C extension or pure Python, whichever MODE_AUTO picked)
    ipv6: bool  # an IPv4-only tree cannot be asked about IPv6 addresses


class Classifier:
    def __init__(
        self,
        mmdb_paths: Sequence[str | os.PathLike[str]] = (),
        continent_of: Mapping[str, str] | None = None,
        cache_size: int = 65536,
    ) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, not {cache_size}")
        self._continent_of = dict(continent_of or {})
        # lru_cache: bounded (LRU eviction keeps memory flat under a flood of random
        # addresses), thread-safe, and implemented in C so a hit costs about a dict lookup.
        self._cache = lru_cache(maxsize=cache_size)(self._lookup)
        self._dbs: list[_Db] = []
        try:
            for path in mmdb_paths:
                self._dbs.append(_open(path))
        except GeoDatabaseError:
            self.close()  # don't leak the files opened before the bad one
            raise

    def locate(self, address: str) -> Location:
        """Classify an IPv4 or IPv6 address given as text; invalid text gives UNKNOWN."""
        return self._cache(address)

    def cached(self) -> int:
        """Addresses in the lookup cache (for the debug log)."""
        return self._cache.cache_info().currsize

    def close(self) -> None:
        for db in self._dbs:
            db.reader.close()
        self._dbs.clear()
        self._cache.cache_clear()

    def _lookup(self, address: str) -> Location:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return UNKNOWN
        if ip.version == 6 and ip.ipv4_mapped is not None:
            # Dual-stack sockets report IPv4 clients as ::ffff:a.b.c.d; neither the mmdb
            # trees (IPv4 at ::/96) nor iptocc know that form.
            ip = ip.ipv4_mapped
        for db in self._dbs:
            found = self._from_mmdb(db, ip)
            if found is not None:
                return found
        country = iptocc.country_code(str(ip))
        if country:
            return Location(self._continent_of.get(country), country, None, None, "embedded")
        return UNKNOWN

    def _from_mmdb(self, db: _Db, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Location | None:
        if ip.version == 6 and not db.ipv6:
            return None
        try:
            # For an IPv4 address in an IPv6 tree maxminddb already reports the IPv4 prefix
            # length (tree depth - 96, clamped at 0), so prefixlen needs no conversion here.
            record, prefixlen = db.reader.get_with_prefix_len(ip)
        except (maxminddb.InvalidDatabaseError, ValueError):
            return None  # a damaged record (or a reader closed by a reload) must not take down the query path
        # Anonymous/satellite ranges carry only registered_country; DB-IP lite and the
        # City layout use the same keys as GeoIP2-Country.
        country = _dig(record, "country", "iso_code") or _dig(record, "registered_country", "iso_code")
        if country is None:
            return None
        continent = self._continent_of.get(country) or _dig(record, "continent", "code")
        subdivision = _dig(record, "subdivisions", 0, "iso_code")
        return Location(continent, country, subdivision, prefixlen, db.source)


def _open(path: str | os.PathLike[str]) -> _Db:
    name = os.fsdecode(path)
    try:
        reader = maxminddb.open_database(name, maxminddb.MODE_AUTO)
    except OSError as exc:
        raise GeoDatabaseError(name, f"cannot open: {exc.strerror or exc}") from exc
    except (maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise GeoDatabaseError(name, "not a valid MaxMind DB (.mmdb) file") from exc
    return _Db(f"mmdb:{name}", reader, reader.metadata().ip_version == 6)


def _dig(obj: Any, *keys: str | int) -> str | None:
    """obj[k1][k2]... as a non-empty string; None when a step is missing or of another type."""
    for key in keys:
        if isinstance(key, int):
            obj = obj[key] if isinstance(obj, list) and len(obj) > key else None
        else:
            obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, str) and obj else None
