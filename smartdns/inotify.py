"""Linux inotify on a set of directories, read from the asyncio loop (ctypes on libc, no dependency).

The events only say "look now": what changed is decided by the caller from the files themselves,
so an event this module reports too many (an editor's swap file) costs a look, not a reload.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
import time
import weakref
from pathlib import Path
from typing import Iterable

# from <sys/inotify.h>
IN_MODIFY = 0x002  # a write in place: the burst's quiet time starts again, the file is still being written
IN_ATTRIB = 0x004  # mtime set by hand (touch, rsync, tar), permissions
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080  # the deploy's rename of a finished file over the old one
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000  # events were dropped: look at everything
IN_IGNORED = 0x8000  # the watch is gone (directory deleted, filesystem unmounted)
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

DIRECTORY_EVENTS = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
                    | IN_DELETE_SELF | IN_MOVE_SELF)
EVENT_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


class InotifyUnavailable(OSError):
    """No inotify here (not Linux, no libc symbol) or no instance or watch left (the limits in
    /proc/sys/fs/inotify); the caller falls back to looking at the files on a timer."""


def _libc() -> ctypes.CDLL:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError) as exc:
        raise InotifyUnavailable(errno.ENOSYS, f"inotify is not available: {exc}") from None
    return libc


def _error(what: str) -> OSError:
    code = ctypes.get_errno()
    if code == errno.ENOSPC:
        return InotifyUnavailable(code, f"{what}: the inotify watch limit is reached "
                                        "(raise fs.inotify.max_user_watches)")
    if code == errno.EMFILE:
        return InotifyUnavailable(code, f"{what}: the inotify instance limit is reached "
                                        "(raise fs.inotify.max_user_instances)")
    if code in (errno.ENOSYS, errno.EINVAL):
        return InotifyUnavailable(code, f"{what}: inotify is not available ({os.strerror(code)})")
    return OSError(code, f"{what}: {os.strerror(code)}")


def nearest_existing(directory: Path) -> Path:
    """The directory, or the closest ancestor that exists: its events say when the directory appears."""
    while not directory.is_dir() and directory.parent != directory:
        directory = directory.parent
    return directory


class DirectoryWatch:
    """Watches directories for entries written, renamed, created, deleted or touched.

    Every event sets `changed` and moves `last_event` (time.monotonic()); the caller clears
    `changed`. `watch()` sets the directories to follow (again whenever they may have moved):
    one that does not exist yet is followed through its nearest existing ancestor, and one
    reached through a symlink also through the symlink's own directory, so that a swapped link
    shows. Raises InotifyUnavailable when inotify is missing or a limit is reached.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _error("inotify_init1")
        self.fd: int = fd
        self._loop = loop
        self._by_path: dict[Path, int] = {}  # watched directory -> watch descriptor
        self.changed = asyncio.Event()
        self.last_event = 0.0
        self.events = 0  # read so far (for the debug log)
        loop.add_reader(fd, self._read)
        _open.add(self)

    def watch(self, directories: Iterable[Path]) -> None:
        wanted: set[Path] = set()
        for directory in directories:
            directory = Path(os.path.abspath(directory))
            wanted.add(nearest_existing(directory))
            if directory.is_symlink():
                wanted.add(directory.parent)
        for path in set(self._by_path) - wanted:
            self._forget(path)
        for path in sorted(wanted - set(self._by_path)):
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), DIRECTORY_EVENTS | IN_ONLYDIR)
            if wd < 0:
                error = _error(f"watching {path}")
                if isinstance(error, InotifyUnavailable):
                    raise error
                continue  # gone between the look and the watch: the next call finds its ancestor
            self._by_path[path] = wd

    @property
    def directories(self) -> list[Path]:
        return sorted(self._by_path)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return  # closed under us
            if not data:
                return
            self._parse(data)
            self.last_event = time.monotonic()
            self.changed.set()

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + EVENT_HEADER.size <= len(data):
            wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
            offset += EVENT_HEADER.size + length
            self.events += 1
            # the kernel dropped the watch, or the directory moved away from its path: forget it, the
            # next watch() follows what is at the path now
            if mask & (IN_IGNORED | IN_MOVE_SELF):
                for path, known in list(self._by_path.items()):
                    if known == wd:
                        self._forget(path)

    def _forget(self, path: Path) -> None:
        wd = self._by_path.pop(path)
        if wd not in self._by_path.values():  # two paths to one directory share its watch
            self._libc.inotify_rm_watch(self.fd, wd)  # may be gone already: no matter

    def close(self) -> None:
        if self.fd < 0:
            return
        self._loop.remove_reader(self.fd)
        self._close_fd()

    def _close_fd(self) -> None:
        os.close(self.fd)
        self.fd = -1
        self._by_path.clear()


# A process forked while a watch is open (a worker started again by the supervisor) does not keep
# the watch's descriptor: the events are the supervisor's to read.
_open: weakref.WeakSet[DirectoryWatch] = weakref.WeakSet()


def _close_in_child() -> None:
    for watch in list(_open):
        if watch.fd >= 0:
            watch._close_fd()


os.register_at_fork(after_in_child=_close_in_child)
