"""Where a serving process gets its zones after the first load, without parsing in the interpreter that answers.

- `LoaderProcess`: the loader of a single server or of a supervisor, a child forked before
  any thread exists. The first load runs in the serving process itself (nothing is served yet,
  so no query waits, and a handover of every zone would cost more than the load saves): the
  loader is then told what is served. Asked with the config, it loads (only the files that
  changed are parsed again), signs, and answers with a handover update.
- `SupervisorFeed`: a worker's zones: those it inherited when the supervisor forked it,
  then every update the supervisor sends after its own reloads. A worker never loads.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pickle
import queue
import signal
import socket
import threading
from dataclasses import replace
from types import MappingProxyType
from typing import BinaryIO, Callable, Mapping

import dns.rdatatype

from .config import Config
from .handover import StaleBase, decode, encode, frame, read_frame, receive
from .model import ZoneData, immutable_rdataset
from .reload import LoadResult, give_back_memory, load_all

log = logging.getLogger(__name__)

LOADER_NICENESS = 10


class LoaderProcess:
    """A forked child that loads for us; `load` runs in a thread of the serving process."""

    def __init__(self, close: Callable[[], None]) -> None:
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the loader: never returns into the server's frames
            code = 1
            try:
                ours.close()
                close()  # the server's sockets are not ours to hold
                _loader_main(theirs)
                code = 0
            except BaseException:  # whatever happens, the child must not run on as a server
                log.exception("zone loader failed")
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self.sock = ours
        log.info("zone loader started (pid %d)", pid)

    def load(self, config: Config, previous: Mapping[str, ZoneData], sign_at: float | None,
             reparse: bool) -> LoadResult:
        self._ask(("load", config, sign_at, reparse, False))
        try:
            zones, update = decode(receive(self.sock.recv), previous)
        except StaleBase as exc:  # we and the loader disagree on what is served: everything comes whole
            log.error("zone handover: %s; loading every zone again", exc)
            # parsed again, not only sent whole: for an unsigned zone the loader keeps a shell, not its records
            self._ask(("load", config, sign_at, True, True))
            zones, update = decode(receive(self.sock.recv), previous)
        return LoadResult(zones, update.problems, update.warnings, update.kept, update.parsed)

    def adopt(self, config: Config, zones: Mapping[str, ZoneData],
              digests: Mapping[str, Mapping[bytes, int] | None]) -> None:
        """After the first load, made in the serving process: what it serves and each name's digest, so
        that the loader's next load parses only the files changed since and hands over only the names
        they changed."""
        signed = frozenset(path for path, zone in zones.items() if zone.dnssec is not None)
        self._ask(("served", config, {path: replace(_shell(zone), digests=digests.get(path))
                                      for path, zone in zones.items()}, signed))

    def _ask(self, request: tuple[object, ...]) -> None:
        self.sock.sendall(frame(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)))

    def close(self) -> None:
        self.sock.close()  # the loader sees the end and exits
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _loader_main(sock: socket.socket) -> None:
    signal.set_wakeup_fd(-1)  # the server's loop owns it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the server stops us by closing the socket
    try:
        os.nice(LOADER_NICENESS)  # parsing is background work: a core the answering processes want is theirs
    except OSError:
        pass
    parsed_before: dict[str, ZoneData] = {}  # each file as last parsed, before signing
    zones: dict[str, ZoneData] = {}  # what the server has, as far as telling changes apart needs
    while True:
        try:
            request = pickle.loads(read_frame(sock.recv))
        except EOFError:
            return
        if request[0] == "served":
            zones, parsed_before = _adopt(*request[1:])
            continue  # no answer: the server goes on serving what it loaded
        _, config, sign_at, reparse, whole = request
        result = load_all(config, zones, sign_at, parsed_before=parsed_before, reparse=reparse)
        frames = encode(result.zones, {} if whole else zones, result.problems, result.warnings, result.kept, "",
                        result.parsed)
        zones = _served(result.zones, zones, parsed_before)
        del result  # the loaded data: nothing here holds it now
        gc.collect()  # octoDNS's cycles, before the next load
        give_back_memory()
        sock.sendall(b"".join(frame(f) for f in frames))


def _served(loaded: Mapping[str, ZoneData], before: Mapping[str, ZoneData],
            parsed_before: dict[str, ZoneData]) -> dict[str, ZoneData]:
    """What the server has after this load. The names and records of a newly loaded zone live on in the
    server only: here a shell (origin, stamp) stands for it, and for its parse when it is not signed.
    A signed zone is signed again at every load, from its parse kept whole. (A function of its own:
    a loop variable left in the loader's frame kept the last zone loaded alive until the next load.)"""
    served: dict[str, ZoneData] = {}
    for path, zone in loaded.items():
        if before.get(path) is zone:
            served[path] = zone
            continue
        served[path] = shell = _shell(zone)
        if zone.dnssec is None and parsed_before.get(path) is zone:
            parsed_before[path] = shell
    return served


def _adopt(config: Config, served: dict[str, ZoneData],
           signed: frozenset[str]) -> tuple[dict[str, ZoneData], dict[str, ZoneData]]:
    """The loader's state after the server's own first load: what it serves (shells), and each file as
    parsed. An unsigned zone's shell stands for its parse (same stamp: not parsed again). A signed zone is
    signed again at every load from its parse kept whole, which did not come across: parsed here now,
    ahead of the next load, while the server serves."""
    parsed_before = {path: shell for path, shell in served.items() if path not in signed}
    parsed = 0
    if signed:
        parsed = load_all(config, served, sign=False, parsed_before=parsed_before).parsed  # the signed files
        gc.collect()
        give_back_memory()
    log.debug("zone loader: told of %d zones served, %d files parsed here", len(served), parsed)
    return served, parsed_before


def _shell(zone: ZoneData) -> ZoneData:
    """What stands for a served zone here: its origin, stamp, settings and names' digests, not its names,
    records, SOA or signatures (only its identity is compared: the server has the zone itself). Without
    the SOA, telling the loader of 1,000 zones served costs the server 22 ms of pickling, not 140."""
    return replace(zone, nodes=MappingProxyType({}), names=frozenset(), dnssec=None, dynamic=(), soa=_NO_SOA)


_NO_SOA = immutable_rdataset(dns.rdatatype.SOA, 0, ())  # a shell's: the loader never reads it


class SupervisorFeed:
    """A worker's zones: inherited at the fork, then the supervisor's updates, read by a daemon thread
    (never a thread that shutdown would wait for)."""

    def __init__(self, zones: Mapping[str, ZoneData], fd: int) -> None:
        self.inherited: Mapping[str, ZoneData] | None = zones
        self.file = os.fdopen(fd, "rb", buffering=0)
        self.updates: asyncio.Queue[list[bytes] | None] = asyncio.Queue()
        self.pending: list[bytes] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def read() -> None:
            while True:
                try:
                    frames = receive(self.file.read)
                except (EOFError, OSError):
                    loop.call_soon_threadsafe(self.updates.put_nowait, None)
                    return
                loop.call_soon_threadsafe(self.updates.put_nowait, frames)

        threading.Thread(target=read, daemon=True, name="zone updates").start()

    @staticmethod
    def reason_of(frames: list[bytes]) -> str:
        return str(pickle.loads(frames[0]).reason) or "the supervisor reloaded"

    def load(self, previous: Mapping[str, ZoneData]) -> LoadResult:
        if self.inherited is not None:
            zones, self.inherited = self.inherited, None
            return LoadResult(dict(zones))
        assert self.pending is not None
        frames, self.pending = self.pending, None
        try:
            zones, update = decode(frames, previous)
        except StaleBase as exc:  # this worker missed a version: the supervisor starts it again with its data
            log.error("zone handover: %s; this worker stops to be started again", exc)
            os._exit(1)
        return LoadResult(zones, update.problems, update.warnings, update.kept, update.parsed)


class Broadcaster:
    """The supervisor's side: each worker's updates written by a thread of its own, in order."""

    def __init__(self) -> None:
        self.queues: dict[int, queue.Queue[list[bytes] | None]] = {}
        self.files: dict[int, BinaryIO] = {}

    def close_in_child(self) -> None:
        """In a newly forked worker: the pipes to the others are not its own."""
        for out in self.files.values():
            out.close()

    def add(self, pid: int, fd: int) -> None:
        updates: queue.Queue[list[bytes] | None] = queue.Queue()
        self.queues[pid] = updates
        out = self.files[pid] = os.fdopen(fd, "wb", buffering=0)

        def write() -> None:
            with out:
                while True:
                    frames = updates.get()
                    if frames is None:
                        return
                    try:
                        out.write(b"".join(frame(f) for f in frames))
                    except OSError:
                        return  # the worker died: it is started again with the full state

        threading.Thread(target=write, daemon=True, name=f"updates to {pid}").start()

    def remove(self, pid: int) -> None:
        self.files.pop(pid, None)
        updates = self.queues.pop(pid, None)
        if updates is not None:
            updates.put(None)

    def send(self, zones: Mapping[str, ZoneData], previous: Mapping[str, ZoneData], result: LoadResult,
             reason: str) -> None:
        if not self.queues:
            return
        frames = encode(zones, previous, result.problems, result.warnings, result.kept, reason, result.parsed)
        for updates in self.queues.values():
            updates.put(frames)
