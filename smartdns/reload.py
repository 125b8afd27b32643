"""Loading every zone, the load sequence every process runs, and noticing when zones, config or
GeoIP files change.

A zone that fails to load keeps its last good version (if it ever had one);
the new data replaces the old in one swap of whole objects.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, Iterable, Iterator, Mapping, TypeVar

import dns.exception
import dns.name

from .config import Config, ConfigError, SoaSettings, load_config
from .dnssec.keys import key_files as zone_key_files
from .dnssec.zone import sign_zone
from .geo import GeoDatabaseError
from .handover import repack
from .health import HealthView
from .inotify import DirectoryWatch, InotifyUnavailable
from .metrics import ServerStatus
from .model import DynamicRRset, Problem, ZoneData, ZoneLoadError
from .retire import retire
from .zonefile import load_zone, zone_name_for

if TYPE_CHECKING:  # loader.py imports this module
    from .loader import LoaderProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    zones: Mapping[str, ZoneData]  # by file path
    problems: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    kept: tuple[str, ...] = ()  # files whose last good version is still served
    parsed: int = 0  # files read and parsed (the others were unchanged since the last load)


def zone_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(".yaml") and not p.name.startswith("."))
    except OSError:
        return []


def load_all(config: Config, previous: Mapping[str, ZoneData] | None = None, now: float | None = None,
             sign: bool = True, parsed_before: dict[str, ZoneData] | None = None, reparse: bool = False,
             freeze: bool = False) -> LoadResult:
    """Load every `*.yaml` in the zones directory, signed where it has keys (as at `now`; `sign`
    False: not signed, for a process that does not answer); on failure keep `previous`'s version.
    `freeze`: see collected_once (for a load nothing runs beside, the first)."""
    previous = previous or {}
    now = time.time() if now is None else now
    zones: dict[str, ZoneData] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = []
    kept: list[str] = []
    parsed = 0
    files = zone_files(config.zones)
    if not files and not config.zones.is_dir():
        problems.append(Problem(str(config.zones), 0, "", "", "zones directory does not exist"))
    by_origin: dict[str, str] = {}
    for path in files:
        key = str(path)
        soa = config.soa_for(path.name[: -len(".yaml")])
        stamp = file_stamp(path, soa, config.dnssec_keys)
        cached = parsed_before.get(key) if parsed_before is not None and not reparse else None
        try:
            with collected_once(freeze):
                if cached is not None and stamp and cached.stamp == stamp:
                    zone = cached  # unchanged file, settings and keys: nothing to parse again
                else:
                    parsed += 1
                    zone = replace(load_zone(path, soa), stamp=stamp)
                    if parsed_before is not None:
                        parsed_before[key] = zone
                if sign:
                    zone = sign_zone(zone, config.dnssec_keys, config.dnskey_ttl, now,
                                     zone.origin.to_text().lower() in config.dnssec_nsec3)
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
    for name in sorted(config.dnssec_nsec3 - set(by_origin)):  # a typo would quietly leave the zone on NSEC
        warnings.append(Problem(config.source or "config", 0, "", "",
                                f"dnssec nsec3: {name} is not a zone in {config.zones}"))
    present = {str(path) for path in files}
    for key, zone in previous.items():
        if key not in present:
            warnings.append(Problem(key, 0, "", "", f"zone file deleted: {zone.origin} is no longer served"))
    if parsed_before is not None:
        for key in set(parsed_before) - present:
            del parsed_before[key]
    return LoadResult(zones, tuple(problems), tuple(warnings), tuple(kept), parsed)


@contextmanager
def collected_once(freeze: bool = False) -> Iterator[None]:
    """The collector paused while one file loads, then what it allocated walked once for cycles.

    A load allocates millions of objects that live on; the collections those allocations would set
    off walk them again and again (measured: a third of a 50,000-record load's CPU). Walking the
    file's own objects once at its end still frees its cycles before the next file's data is laid
    among them (never collecting until the end of a 300-file load left twice the memory).
    `freeze`: what is left is then moved out of the collector's reach at once (gc.freeze), as the
    served data is after every load, and no later collection walks it again: 0.1 s less at a start
    with 50,000 records, where the full collection after the load found only 20 objects (cycles
    that imports leave) to free."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.collect(0)  # the youngest generation: everything allocated since, as the collector is off
        if freeze:
            gc.freeze()
        if collecting:
            gc.enable()


def give_back_memory() -> None:
    """Give a load's freed memory back to the system where the C library can (glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def file_stamp(path: Path, soa: SoaSettings, keys: Path) -> tuple[object, ...]:
    """What identifies one version of a zone file, the settings it is built with and its DNSSEC key
    files (() if unreadable). Taken before the file is read: a write during the read changes the
    stamp, so the next look loads the file again. Deployed edits rename a new file over the old
    one (a new inode); an edit in place changes the modification time."""
    try:
        st = os.stat(path)
        key_stamps = []
        for key in zone_key_files(keys, dns.name.from_text(zone_name_for(path))):
            key_st = os.stat(key)
            key_stamps.append((key.name, key_st.st_mtime_ns, key_st.st_size))
    except (OSError, dns.exception.DNSException):
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev, soa, tuple(key_stamps))


def key_files(directory: Path) -> list[Path]:
    """DNSSEC key files: a new key or new timing is a reload."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.startswith("K"))
    except OSError:
        return []


def next_signing_event(zones: Iterable[ZoneData]) -> float | None:
    """When signatures must be made again (a window rolls over, a key changes state)."""
    events = [z.dnssec.next_event for z in zones if z.dnssec is not None]
    return min(events) if events else None


Signature = tuple[tuple[str, int | None, int | None, int | None], ...]


def signature(paths: Iterable[Path]) -> Signature:
    """What changes when any of these files (or the set of them) changes."""
    out: list[tuple[str, int | None, int | None, int | None]] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(path), None, None, None))
    return tuple(out)


def watched_files(config: Config) -> list[Path]:
    files = zone_files(config.zones) + list(config.geodb) + key_files(config.dnssec_keys)
    if config.source:
        files.append(Path(config.source))
    return files


def watched_directories(config: Config) -> list[Path]:
    """Where the watched files live or would appear: the zones and DNSSEC key directories, the
    config file's and every GeoIP file's directory."""
    directories = [config.zones, config.dnssec_keys, *(path.parent for path in config.geodb)]
    if config.source:
        directories.append(Path(config.source).parent)
    return directories


WATCH_INTERVAL = 1.0  # seconds between looks at the files, where inotify cannot be used
# A burst of events (a write then a rename, a `git checkout` of many files) is one reload: the look
# comes this long after the burst's last event, and never later than SETTLE_MAX after its first.
SETTLE_QUIET = 0.08
SETTLE_MAX = 0.5
# With inotify, a look at the files anyway this often: changes made by another machine on a network
# filesystem (NFS, CIFS) or inside a FUSE one raise no event here.
SAFETY_INTERVAL = 30.0


async def watch(files: Callable[[], list[Path]], on_change: Callable[[], Awaitable[None]],
                stopping: asyncio.Event, interval: float = WATCH_INTERVAL, seen: Signature | None = None,
                directories: Callable[[], list[Path]] | None = None, safety_interval: float = SAFETY_INTERVAL) -> None:
    """Call `on_change` when the files change and have stopped changing (a write in progress is waited out).

    `directories`: where they live, watched with inotify: a change is looked at once its burst of
    events is over, and a look every `safety_interval` anyway. Without them, without inotify or past
    its limits: a look every `interval`.
    Either way a change is what the files' signature shows (an editor's swap file is no reload).
    `seen`: the files' signature taken before the first load, so that an edit made while that load
    and the start went on is not taken for the baseline and missed.
    """
    seen = signature(files()) if seen is None else seen
    if directories is not None:
        last = await _watch_events(files, directories, on_change, stopping, seen, interval, safety_interval)
        if last is None:
            return
        seen = last
    await _poll(files, on_change, stopping, interval, seen)


async def _watch_events(files: Callable[[], list[Path]], directories: Callable[[], list[Path]],
                        on_change: Callable[[], Awaitable[None]], stopping: asyncio.Event,
                        seen: Signature, interval: float, safety_interval: float) -> Signature | None:
    """Watch with inotify until stopping (None), or until it cannot be used (the last signature seen)."""
    try:
        watcher = DirectoryWatch(asyncio.get_running_loop())
    except InotifyUnavailable as exc:
        log.warning("%s: looking at the files every %g s instead", exc.strerror, interval)
        return seen
    try:
        while not stopping.is_set():
            watcher.changed.clear()  # before the look: an event from now on is a change it may not see
            try:
                watcher.watch(directories())  # again each time: a reload may have moved them
            except InotifyUnavailable as exc:
                log.warning("%s: looking at the files every %g s instead", exc.strerror, interval)
                return seen
            now = signature(files())
            if now != seen:
                log.debug("files changed (%d inotify events so far)", watcher.events)
                seen = now
                await _reload(on_change)  # events meanwhile leave `changed` set: waited out below
            if await _first_of(stopping, watcher.changed, safety_interval):
                return None
            if watcher.changed.is_set() and await _settle(watcher, stopping):
                return None
        return None
    finally:
        watcher.close()


async def _first_of(stopping: asyncio.Event, changed: asyncio.Event, timeout: float) -> bool:
    """Wait for an event, the stop or the timeout; True: stopping."""
    waits = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(changed.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    return stopping.is_set()


async def _settle(watcher: DirectoryWatch, stopping: asyncio.Event) -> bool:
    """Wait out a burst of events: SETTLE_QUIET without one, SETTLE_MAX at most; True: stopping."""
    deadline = time.monotonic() + SETTLE_MAX
    while True:
        pause = min(watcher.last_event + SETTLE_QUIET, deadline) - time.monotonic()
        if pause <= 0:
            return False
        if await _stopped(stopping, pause):
            return True


async def _stopped(stopping: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


async def _poll(files: Callable[[], list[Path]], on_change: Callable[[], Awaitable[None]],
                stopping: asyncio.Event, interval: float, seen: Signature) -> None:
    """A look at the files every `interval`; a change is waited out for half of it before the reload."""
    while not await _stopped(stopping, interval):
        now = signature(files())
        if now == seen:
            continue
        if await _stopped(stopping, interval / 2):
            return
        settled = signature(files())
        if settled != now:
            continue  # still being written: look again next round
        seen = settled
        await _reload(on_change)


async def _reload(on_change: Callable[[], Awaitable[None]]) -> None:
    try:
        await on_change()
    except Exception:  # a failed reload must not end the watching
        log.exception("reload failed")


def report(result: LoadResult, quiet: bool = False) -> None:
    """Log what a load found; `quiet`: at debug level only (a worker, whose supervisor says it once)."""
    error, warning = (logging.DEBUG, logging.DEBUG) if quiet else (logging.ERROR, logging.WARNING)
    for problem in result.problems:
        log.log(error, "zone error: %s", problem)
    for warning_text in result.warnings:
        log.log(warning, "zone warning: %s", warning_text)
    for path in result.kept:
        log.log(error, "zone %s: serving its last good version", path)


def dynamic_records(zones: Mapping[str, ZoneData]) -> list[DynamicRRset]:
    return [source for zone in zones.values() for source in zone.dynamic]


def reload_config(config: Config, overrides: dict[str, Any]) -> Config:
    """The config file again (flags still override it); the running config if the file is bad."""
    if not config.source:
        return config
    try:
        fresh = load_config(config.source, **overrides)
    except ConfigError as exc:
        log.error("config error, keeping the running config: %s", exc)
        return config
    if fresh.listen != config.listen or fresh.workers != config.workers:
        log.warning("listen addresses or workers changed in the config: restart smartdns to apply them")
        fresh = replace(fresh, listen=config.listen, workers=config.workers)
    return fresh


Prepared = TypeVar("Prepared")
RESIGN_POLL = 1.0  # seconds between looks at the next signing event (a few comparisons)
RESIGN_LEAD = 60.0  # start building the next generation this long before its moment
RESIGN_RETRY = 60.0


class LoadSequence(Generic[Prepared]):
    """The one load and reload sequence of a serving process (Server) and of the supervisor.

    Read the config file again (flags still win), load every zone off the event
    loop keeping the last good version of a file that fails, let the process put
    the new data in service (`apply`), then count the load and probe the new
    dynamic records' targets. Reloads run one at a time: a SIGHUP and the file
    watcher at once go one after the other, never crossed.
    """

    def __init__(self, config: Config, overrides: dict[str, Any], status: ServerStatus, health: HealthView,
                 announces: bool = True) -> None:
        self.config = config
        # False in a worker: its supervisor logs loads, reloads and zone errors once for all of them
        self.announces = announces
        self.overrides = overrides  # command-line flags: they stay in force over the file on reload
        self.status = status
        self.health = health
        self.zones: dict[str, ZoneData] = {}  # the last good version of every zone, by file
        self.sign_at: float | None = None  # during a load ahead of a signing event: that moment
        self.reloading = asyncio.Lock()
        self.reparse = False  # this load parses every file, changed or not (SIGHUP: edits no stat shows)
        self.first = False  # this load is the first: nothing is served yet
        self.stopping = asyncio.Event()
        # Reloads run in a loader process when there is one, so the answering interpreter never parses
        self.loader: LoaderProcess | None = None
        self.parsed_before: dict[str, ZoneData] = {}  # for loading here, should the loader be gone

    def load_zones(self, config: Config) -> LoadResult:
        """Runs in a worker thread: the zones from the loader process; here the first time, and if it is gone.

        The first load runs here even with a loader: no query waits for it yet, and handing every zone
        over (pickled there, rebuilt here) would cost more CPU than the load saves. The loader is then
        told what is served, and loads from the next reload on."""
        loader = self.loader
        if loader is not None and not self.first:
            try:
                return loader.load(config, self.zones, self.sign_at, self.reparse)
            except (EOFError, OSError) as exc:
                log.error("zone loader gone (%s): loading in this process from now on", exc)
                self.loader = loader = None
        result = load_all(config, self.zones, self.sign_at, reparse=self.reparse,
                          parsed_before=self.parsed_before if loader is None else None, freeze=self.first)
        if not self.first:
            gc.collect()  # octoDNS's cycles must not be frozen with the data (a first load froze each file's clean)
        if loader is None:
            give_back_memory()
            return result
        # Each name's digest goes to the loader (it tells what a reload changed by them), not into service:
        # sent, and let go, before the repacking, or they would stay scattered among the packed data
        # (13 MB more for a 50,000-record zone when they went after it)
        zones = {path: replace(zone, digests=None) for path, zone in result.zones.items()}
        try:
            loader.adopt(config, zones, {path: zone.digests for path, zone in result.zones.items()})
        except OSError as exc:
            log.error("zone loader gone (%s): loading in this process from now on", exc)
            self.loader = None
        result = replace(result, zones={})  # `zones` alone holds the loaded data now
        repack(zones)  # packed, before the data is frozen and the workers fork
        give_back_memory()  # what the parse left behind
        return replace(result, zones=zones)

    def prepare(self, config: Config) -> tuple[Prepared, LoadResult]:
        """Runs in a worker thread: load the zones and make whatever `apply` needs from them."""
        raise NotImplementedError

    def apply(self, config: Config, prepared: Prepared, result: LoadResult, first: bool) -> None:
        """On the event loop: put the new data in service, before `self.config` becomes `config`."""

    def loaded(self, result: LoadResult, reason: str | None) -> None:
        """After the load is counted and followed (reason None: the first load)."""

    async def load(self) -> LoadResult:
        """The first load; what fails here fails the start."""
        return await self._load(self.config, None)

    async def reload(self, reason: str, sign_at: float | None = None, reparse: bool = False) -> None:
        """Load again (the changed files only, unless `reparse`); a GeoIP file that cannot be read keeps
        the running data. `sign_at`: sign as at that (coming) moment and put the new data in service
        then, not before (DNSSEC windows)."""
        async with self.reloading:
            config = reload_config(self.config, self.overrides)
            self.reparse = reparse
            try:
                await self._load(config, reason, sign_at)
            except GeoDatabaseError as exc:
                log.log(logging.ERROR if self.announces else logging.DEBUG,
                        "reload (%s) failed, keeping the running data: %s", reason, exc)
            finally:
                self.reparse = False

    async def _load(self, config: Config, reason: str | None, sign_at: float | None = None) -> LoadResult:
        started = time.perf_counter()
        self.sign_at = sign_at
        self.first = reason is None
        try:
            prepared, result = await asyncio.to_thread(self.prepare, config)
        except BaseException:
            gc.enable()  # handover.decode pauses the collector until the new data is frozen
            raise
        finally:
            self.sign_at = None
            self.first = False
        loading = time.perf_counter() - started
        if sign_at is not None:
            await asyncio.sleep(max(0.0, sign_at - time.time()))  # the old data stays valid until then
        swap_started = time.perf_counter()
        self.apply(config, prepared, result, reason is None)
        # The loaded data lives until the next reload: out of the collector's generations, a full
        # collection (set off by any allocation, a new ECS client's) no longer walks every record
        # with the interpreter held. Replaced data is still freed by reference counting.
        gc.freeze()
        gc.enable()  # handover.decode pauses the collector while it builds the data
        log.debug("%s took %.3fs: loading %.3fs, swap %.3fs (%d zones, %d problems)",
                  "load" if reason is None else f"reload ({reason})", time.perf_counter() - started,
                  loading, time.perf_counter() - swap_started, len(result.zones), len(result.problems))
        self.config = config
        replaced = [zone for path, zone in self.zones.items() if result.zones.get(path) is not zone]
        self.zones = dict(result.zones)
        retire(replaced)  # freed a piece at a time, not in one pause of every answering thread
        del replaced
        self.status.loaded(len(result.zones), sum(z.record_count for z in result.zones.values()),
                           not result.problems, reload=reason is not None)
        self.health.follow(dynamic_records(self.zones), config.health)
        self.loaded(result, reason)
        return result

    async def resign(self) -> None:
        """Sign again before a signing window rolls over or a key changes state: the new generation
        is built ahead, off the event loop, signed as at that moment, and swapped in when it comes.
        The times come from the files and the clock alone, so every server swaps at the same moment."""
        retry_at = 0.0
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), RESIGN_POLL)
                return
            except asyncio.TimeoutError:
                pass
            due = next_signing_event(self.zones.values())  # of the latest load, whatever caused it
            now = time.time()
            if due is None or now < due - RESIGN_LEAD or now < retry_at:
                continue
            await self.reload("DNSSEC signing event", sign_at=max(due, now))
            if next_signing_event(self.zones.values()) == due:
                retry_at = time.time() + RESIGN_RETRY  # the load left the event due (a key file problem)
