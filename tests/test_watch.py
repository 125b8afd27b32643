"""The file watcher in-process, on real files in a temporary directory: inotify events (Linux), the
burst that is one reload, the files that are no reload, and the timed look where inotify is missing.
The served side (an edit answered without SIGHUP) is in test_reload.py."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Awaitable, Callable

import pytest

from smartdns.inotify import DirectoryWatch, InotifyUnavailable
from smartdns.reload import SETTLE_MAX, signature, watch, zone_files

TIMEOUT = 10.0  # generous: the machine may be loaded; what is tested is what happens, not how fast


def needs_inotify() -> None:
    try:
        DirectoryWatch(asyncio.get_running_loop()).close()
    except InotifyUnavailable as exc:
        pytest.skip(f"no inotify here: {exc}")


def deploy(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Watching:
    """`watch` on the `*.yaml` files of `directory`, counting the reloads it asks for."""

    def __init__(self, directory: Path, use_inotify: bool = True, interval: float = 1.0) -> None:
        self.directory = directory
        self.reloads = 0
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()
        directories: Callable[[], list[Path]] | None = (lambda: [directory]) if use_inotify else None
        self.task = asyncio.ensure_future(watch(lambda: zone_files(directory), self.reload, self.stopping,
                                                interval=interval, directories=directories))

    async def reload(self) -> None:
        self.reloads += 1
        self.changed.set()

    async def next_reload(self) -> None:
        await asyncio.wait_for(self.changed.wait(), TIMEOUT)
        self.changed.clear()

    async def quiet(self, seconds: float = 2 * SETTLE_MAX) -> None:
        """Long enough for a reload that was coming to have come."""
        await asyncio.sleep(seconds)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, TIMEOUT)


async def started(directory: Path, **kwargs: object) -> Watching:
    watching = Watching(directory, **kwargs)  # type: ignore[arg-type]
    await asyncio.sleep(0.1)  # its watches are set before anything is written
    return watching


def with_directory_watch(test: Callable[[DirectoryWatch], Awaitable[None]]) -> None:
    async def main() -> None:
        needs_inotify()
        watcher = DirectoryWatch(asyncio.get_running_loop())
        try:
            await test(watcher)
        finally:
            watcher.close()

    asyncio.run(main())


def test_directory_watch_reports_a_rename_into_the_directory(tmp_path):
    async def test(watcher: DirectoryWatch) -> None:
        watcher.watch([tmp_path])
        assert watcher.directories == [tmp_path]
        assert not watcher.changed.is_set()
        deploy(tmp_path / "a.yaml", "x")
        await asyncio.wait_for(watcher.changed.wait(), TIMEOUT)
        assert watcher.events >= 2  # the temporary file's close, the rename

    with_directory_watch(test)


def test_a_directory_not_there_yet_is_followed_through_its_parent(tmp_path):
    async def test(watcher: DirectoryWatch) -> None:
        zones = tmp_path / "zones"
        watcher.watch([zones])
        assert watcher.directories == [tmp_path]
        zones.mkdir()
        await asyncio.wait_for(watcher.changed.wait(), TIMEOUT)
        watcher.watch([zones])
        assert watcher.directories == [zones]

    with_directory_watch(test)


def test_a_forked_process_does_not_keep_the_watch(tmp_path):
    async def test(watcher: DirectoryWatch) -> None:
        watcher.watch([tmp_path])
        fd = watcher.fd
        pid = os.fork()
        if pid == 0:  # the child exits 0 if the descriptor is closed here, 1 if it is still open
            code = 1
            try:
                os.fstat(fd)
            except OSError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        deploy(tmp_path / "a.yaml", "x")  # the parent's watch goes on
        await asyncio.wait_for(watcher.changed.wait(), TIMEOUT)

    with_directory_watch(test)


def test_an_edit_is_one_reload_and_other_files_are_none(tmp_path):
    async def main() -> None:
        needs_inotify()
        zone = tmp_path / "a.test.yaml"
        zone.write_text("1")
        watching = await started(tmp_path)
        deploy(zone, "2")
        await watching.next_reload()
        await watching.quiet()
        assert watching.reloads == 1
        # an editor's swap file, a hidden file, a file of another kind: events, but no zone changed
        (tmp_path / ".a.test.yaml.swp").write_text("x")
        (tmp_path / "notes.txt").write_text("x")
        await watching.quiet()
        assert watching.reloads == 1
        zone.unlink()
        await watching.next_reload()
        await watching.stop()
        assert watching.reloads == 2

    asyncio.run(main())


def test_a_burst_of_fifty_writes_is_few_reloads(tmp_path):
    async def main() -> None:
        needs_inotify()
        zones = [tmp_path / f"z{i:02d}.test.yaml" for i in range(50)]
        for path in zones:
            path.write_text("1")
        watching = await started(tmp_path)

        def checkout() -> None:  # as `git checkout` of a branch that changes every file
            for path in zones:
                deploy(path, "2")

        await asyncio.to_thread(checkout)
        await watching.next_reload()
        await watching.quiet()
        await watching.stop()
        # one reload when the burst is over; one more if a slow machine spread the writes past SETTLE_MAX
        assert 1 <= watching.reloads <= 3, watching.reloads

    asyncio.run(main())


def test_an_edit_in_place_is_waited_out(tmp_path):
    async def main() -> None:
        needs_inotify()
        zone = tmp_path / "a.test.yaml"
        zone.write_text("1\n")
        watching = await started(tmp_path)
        with zone.open("a") as growing:  # a slow writer: 20 lines over ~0.2 s, then closed
            for line in range(20):
                growing.write(f"{line}\n")
                growing.flush()
                await asyncio.sleep(0.01)
        await watching.next_reload()
        await watching.quiet()
        await watching.stop()
        assert watching.reloads <= 2, watching.reloads  # not one per write

    asyncio.run(main())


def test_a_swapped_symlink_to_the_zones_is_noticed(tmp_path):
    async def main() -> None:
        needs_inotify()
        releases = [tmp_path / "release1", tmp_path / "release2"]
        for number, release in enumerate(releases, 1):
            release.mkdir()
            (release / "a.test.yaml").write_text(str(number) * number)  # another size, another inode
        link = tmp_path / "zones"
        link.symlink_to(releases[0])
        watching = await started(link)
        new_link = tmp_path / "zones.new"
        new_link.symlink_to(releases[1])
        os.replace(new_link, link)  # a release deployed by swapping the link
        await watching.next_reload()
        await watching.stop()

    asyncio.run(main())


def test_a_change_no_event_tells_of_is_found_by_the_safety_look(tmp_path):
    """As on NFS, where another machine's writes raise no event here: the watched directory stays
    quiet while the file (elsewhere) changes."""
    async def main() -> None:
        needs_inotify()
        quiet, remote = tmp_path / "quiet", tmp_path / "remote"
        quiet.mkdir()
        remote.mkdir()
        zone = remote / "a.test.yaml"
        zone.write_text("1")
        stopping = asyncio.Event()

        async def reload() -> None:
            stopping.set()

        task = asyncio.ensure_future(watch(lambda: [zone], reload, stopping, directories=lambda: [quiet],
                                           safety_interval=0.3))
        await asyncio.sleep(0.1)
        deploy(zone, "22")
        await asyncio.wait_for(task, TIMEOUT)  # ends once the reload was asked for
        assert stopping.is_set()

    asyncio.run(main())


def test_without_inotify_the_files_are_looked_at_on_a_timer(tmp_path):
    async def main() -> None:
        zone = tmp_path / "a.test.yaml"
        zone.write_text("1")
        watching = await started(tmp_path, use_inotify=False, interval=0.1)
        deploy(zone, "22")
        await watching.next_reload()
        await watching.quiet(0.5)
        await watching.stop()
        assert watching.reloads == 1

    asyncio.run(main())


def test_an_edit_made_before_the_watch_began_is_not_missed(tmp_path):
    async def main() -> None:
        needs_inotify()
        zone = tmp_path / "a.test.yaml"
        zone.write_text("1")
        before_load = signature(zone_files(tmp_path))
        deploy(zone, "22")  # while the first load went on
        stopping = asyncio.Event()
        reloads: list[float] = []

        async def reload() -> None:
            reloads.append(time.monotonic())
            stopping.set()

        await asyncio.wait_for(watch(lambda: zone_files(tmp_path), reload, stopping, seen=before_load,
                                     directories=lambda: [tmp_path]), TIMEOUT)
        assert len(reloads) == 1

    asyncio.run(main())
