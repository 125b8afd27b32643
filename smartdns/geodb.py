"""Build a GeoIP2-Country layout .mmdb from a CSV of `network,country[,continent]` rows.

For sites that know their own segments better than a commercial database (a private
"domestic" list, a carrier's prefixes). This is the only module that imports `mmdb_writer`
and `netaddr`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

__all__ = ["GeoDbBuildError", "build_country_db", "CONTINENT_NAMES"]

CONTINENT_NAMES = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
_COUNTRY = re.compile(r"[A-Z]{2}")
_HEADER = ["network", "country", "continent"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class GeoDbBuildError(Exception):
    """The CSV cannot be turned into a database; the message starts with `file:line:`."""


def build_country_db(
    csv_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    continent_of: Mapping[str, str] | None = None,
    *,
    country_names: Mapping[str, str] | None = None,
    known_countries: Collection[str] | None = None,
) -> int:
    """Write `out_path` from `csv_path`; return the number of networks written.

    `continent_of` (country -> octoDNS continent) fills rows without a continent column;
    `country_names` (country -> English name) fills `names.en`, which defaults to the code.
    With `known_countries`, any other country code is an error (a typo would classify nobody).
    A continent column that contradicts `continent_of` for that country is an error too.
    """
    rows = _read_rows(os.fsdecode(csv_path), continent_of or {}, country_names or {}, known_countries)
    # ip_version 6 with IPv4 at ::/96 (GeoIP2's layout) so one file answers both families.
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-Country",
        languages=["en"],
        description="smartdns country data",
    )
    # mmdb_writer replaces a whole subtree when a covering network is inserted after it, so
    # insert supernets first: the more specific row then wins whatever the CSV order.
    for network, record in sorted(rows, key=lambda row: _depth(row[0])):
        writer.insert_network(IPSet([str(network)]), record)
    _write_atomically(writer, os.fsdecode(out_path))
    return len(rows)


def _read_rows(
    path: str, continent_of: Mapping[str, str], country_names: Mapping[str, str],
    known_countries: Collection[str] | None,
) -> list[tuple[Network, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: spreadsheets like to add a BOM
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise GeoDbBuildError(f"{path}: cannot read: {exc}") from exc

    rows: list[tuple[Network, dict[str, Any]]] = []
    first_line: dict[Network, int] = {}
    header_allowed = True
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split(",")]
        if header_allowed and len(fields) > 1 and [f.lower() for f in fields] == _HEADER[: len(fields)]:
            header_allowed = False
            continue
        header_allowed = False
        where = f"{path}:{lineno}"
        network, country, continent = _parse_row(fields, where)
        if network in first_line:
            raise GeoDbBuildError(f"{where}: duplicate network {network} (first on line {first_line[network]})")
        first_line[network] = lineno
        if known_countries is not None and country not in known_countries:
            raise GeoDbBuildError(f"{where}: unknown country code {country!r}: not an ISO 3166-1 alpha-2 code")
        expected = continent_of.get(country)
        if continent and expected and continent != expected:
            raise GeoDbBuildError(f"{where}: continent {continent} contradicts country {country}, which is in "
                                  f"{expected} (fix the column, or leave it empty to use {expected})")
        continent = continent or expected
        rows.append((network, _record(country, continent, country_names)))
    if not rows:
        raise GeoDbBuildError(f"{path}: no networks")
    return rows


def _parse_row(fields: list[str], where: str) -> tuple[Network, str, str | None]:
    if len(fields) not in (2, 3):
        raise GeoDbBuildError(f"{where}: expected network,country[,continent], got {len(fields)} fields")
    try:
        network = ipaddress.ip_network(fields[0])  # strict: host bits set is a typo, not a /24
    except ValueError as exc:
        raise GeoDbBuildError(f"{where}: bad network: {exc}") from exc
    country = fields[1]
    if not _COUNTRY.fullmatch(country):
        raise GeoDbBuildError(f"{where}: bad country code {country!r}: expected two letters A-Z")
    continent = fields[2] if len(fields) == 3 and fields[2] else None
    if continent is not None and continent not in CONTINENT_NAMES:
        raise GeoDbBuildError(
            f"{where}: bad continent code {continent!r}: expected one of {', '.join(CONTINENT_NAMES)}"
        )
    return network, country, continent


def _record(country: str, continent: str | None, country_names: Mapping[str, str]) -> dict[str, Any]:
    place = {"iso_code": country, "names": {"en": country_names.get(country, country)}}
    record: dict[str, Any] = {}
    if continent:  # unknown continent: leave the key out rather than invent one
        record["continent"] = {"code": continent, "names": {"en": CONTINENT_NAMES.get(continent, continent)}}
    record["country"] = place
    record["registered_country"] = place
    return record


def _depth(network: Network) -> int:
    """Depth of the network in the IPv6 tree (IPv4 sits under ::/96)."""
    return network.prefixlen + (96 if network.version == 4 else 0)


def _write_atomically(writer: MMDBWriter, out_path: str) -> None:
    # A server reloading geodb/ must never open a half-written file: write aside, then rename.
    tmp = f"{out_path}.tmp{os.getpid()}"
    try:
        writer.to_db_file(tmp)
        os.replace(tmp, out_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise GeoDbBuildError(f"{out_path}: cannot write: {exc}") from exc
        raise
