"""Loading every zone, and noticing when zones, config or GeoIP files change.

A zone that fails to load keeps its last good version (if it ever had one);
the new data replaces the old in one swap of whole objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Mapping

from .config import Config
from .zonefile import Problem, ZoneData, ZoneLoadError, load_zone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    zones: Mapping[str, ZoneData]  # by file path
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    kept: tuple[str, ...] = ()  # files whose last good version is still served


def zone_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(".yaml") and not p.name.startswith("."))
    except OSError:
        return []


def load_all(config: Config, previous: Mapping[str, ZoneData] | None = None) -> LoadResult:
    """Load every `*.yaml` in the zones directory; on failure keep `previous`'s version of that file."""
    previous = previous or {}
    zones: dict[str, ZoneData] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    kept: list[str] = []
    files = zone_files(config.zones)
    if not files and not config.zones.is_dir():
        problems.append(Problem(str(config.zones), 0, "", "", "zones directory does not exist"))
    by_origin: dict[str, str] = {}
    for path in files:
        key = str(path)
        try:
            zone = load_zone(path, config.soa_for(path.name[: -len(".yaml")]))
        except ZoneLoadError as exc:
            problems.extend(exc.problems)
            if key in previous:
                zones[key] = previous[key]
                kept.append(key)
            continue
        origin = zone.origin.to_text().lower()
        if origin in by_origin:
            problems.append(Problem(key, 1, "", "", f"zone {origin} is already served from {by_origin[origin]}"))
            continue
        by_origin[origin] = key
        zones[key] = zone
        warnings.extend(zone.warnings)
    return LoadResult(zones, tuple(problems), tuple(warnings), tuple(kept))


def signature(paths: Iterable[Path]) -> tuple:
    """What changes when any of these files (or the set of them) changes."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(path), None))
    return tuple(out)


def watched_files(config: Config) -> list[Path]:
    files = zone_files(config.zones) + list(config.geodb)
    if config.source:
        files.append(Path(config.source))
    return files


WATCH_INTERVAL = 1.0  # seconds between looks at the files


async def watch(files: Callable[[], list[Path]], on_change: Callable[[], Awaitable[None]],
                stopping: asyncio.Event, interval: float = WATCH_INTERVAL) -> None:
    """Call `on_change` when the files change and have stopped changing (a write in progress is waited out)."""
    seen = signature(files())
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), interval)
            return
        except asyncio.TimeoutError:
            pass
        now = signature(files())
        if now == seen:
            continue
        await asyncio.sleep(interval / 2)
        settled = signature(files())
        if settled != now:
            continue  # still being written: look again next round
        seen = settled
        try:
            await on_change()
        except Exception:  # a failed reload must not end the watching
            log.exception("reload failed")
