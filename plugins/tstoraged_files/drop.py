"""Drop-directory mode: ingest complete files dropped into a directory, then move them away.

A file is complete when it was renamed into place (its inode change time is later than its
last write, as after ``mv tmpname final``; temp names matching ``ignore`` are never read) or
when its size and mtime stayed the same for ``settle_time``. It is read to the end (a last
line without newline counts), and once every record of it is acknowledged it is moved to
``done_dir`` or deleted. A file that cannot be read, or has more than ``max_bad_lines``
rejected lines, goes to ``failed_dir`` with a ``<name>.reason`` file beside it.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import os
import shutil
import stat
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tstoraged_files.checkpoint import CheckpointStore, FileCheckpoint
from tstoraged_files.reader import FileReader, TooManyBadLines

if TYPE_CHECKING:
    from tstoraged.source import SourceContext
    from tstoraged_files.config import FilesConfig

__all__ = ["DropDirectory"]


class DropDirectory:
    """Watches one drop directory until cancelled."""

    def __init__(self, config: FilesConfig, context: SourceContext, store: CheckpointStore) -> None:
        assert config.directory is not None
        self.config = config
        self.context = context
        self.store = store
        self.directory = config.directory
        self.done_dir = config.resolved_done_dir
        self.failed_dir = config.resolved_failed_dir
        self._changes: dict[str, tuple[int, int, float]] = {}
        """Name -> (size, mtime_ns, monotonic time it was first seen that way)."""
        self._finishing: set[str] = set()
        """Names read completely, waiting for the ack of their last records."""
        self._stuck: set[str] = set()
        """Names that could be neither ingested nor moved to failed_dir (not retried)."""

    async def run(self) -> None:
        """Scan, ingest and move files until cancelled."""
        await self._directory_exists()
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        if self.config.on_done == "move":
            self.done_dir.mkdir(parents=True, exist_ok=True)
        self._forget_vanished()
        while True:
            ready = self.scan()
            for name in ready:
                await self.ingest(name)
            await asyncio.sleep(0 if ready else self.config.poll_interval)

    def close(self) -> None:
        """Nothing stays open between files."""

    async def _directory_exists(self) -> None:
        """Wait for a missing drop directory, reported as the source's problem meanwhile.

        It is not created: a missing directory is more often a typo or a share that is not
        mounted yet than a directory nobody made, and files dropped elsewhere would wait unseen.
        """
        if self.directory.is_dir():
            return
        self.context.set_problem(f"drop directory {self.directory} does not exist")
        while True:  # nothing to wait on but the next look (inotify does not see a mount)
            await asyncio.sleep(self.config.poll_interval)
            if self.directory.is_dir():
                break
        self.context.set_problem(None)
        self.context.log.info("drop_directory_appeared", directory=str(self.directory))

    def _forget_vanished(self) -> None:
        # Checkpoints of files moved away after their last ack (the move and the checkpoint
        # write are not atomic together) are dropped here.
        present = set()
        with os.scandir(self.directory) as it:
            for item in it:
                st = item.stat(follow_symlinks=False)
                present.add((st.st_dev, st.st_ino))
        for entry in list(self.store.entries):
            if (entry.dev, entry.ino) not in present:
                self.store.remove(entry)

    def scan(self) -> list[str]:
        """Names of complete files not yet ingested, oldest first."""
        now = time.monotonic()
        ready: list[tuple[int, str]] = []
        seen: set[str] = set()
        with os.scandir(self.directory) as it:
            for item in it:
                name = item.name
                if not self._wanted(name):
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                seen.add(name)
                signature = (st.st_size, st.st_mtime_ns)
                previous = self._changes.get(name)
                if previous is None or previous[:2] != signature:
                    self._changes[name] = (*signature, now)
                    since = now
                else:
                    since = previous[2]
                renamed_in = st.st_ctime_ns > st.st_mtime_ns
                if renamed_in or now - since >= self.config.settle_time:
                    ready.append((st.st_mtime_ns, name))
        for name in set(self._changes) - seen:
            del self._changes[name]
        return [name for _, name in sorted(ready)]

    def _wanted(self, name: str) -> bool:
        return (
            fnmatch.fnmatchcase(name, self.config.pattern)
            and not any(fnmatch.fnmatchcase(name, ig) for ig in self.config.ignore)
            and name not in self._finishing
            and name not in self._stuck
        )

    async def ingest(self, name: str) -> None:
        """Read one complete file and emit its records; arrange its move once acknowledged."""
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.fail(name, None, f"cannot open: {exc}")
            return
        entry: FileCheckpoint | None = None
        try:
            st = os.fstat(fd)
            entry = self.store.for_whole_file(fd, st, str(path), self.config.fingerprint_bytes)
            reader = FileReader(
                self.context, self.store, self.config, fd, str(path), entry, limit_bad_lines=True
            )
            if entry.offset:
                self.context.log.info("dropped_file_resumed", path=str(path), line=entry.line)
            while await reader.pump(1):
                pass
            await reader.finish()
        except OSError as exc:
            self.fail(name, entry, f"read error: {exc}")
            return
        except TooManyBadLines as exc:
            self.fail(name, entry, str(exc))
            return
        finally:
            os.close(fd)
        self._finishing.add(name)
        done = partial(self._done, name, entry, (st.st_dev, st.st_ino))
        await self.context.emit([], done)

    def _done(self, name: str, entry: FileCheckpoint, file_id: tuple[int, int]) -> None:
        """Every record of the file is durable: move it away and forget its checkpoint."""
        self._finishing.discard(name)
        self._changes.pop(name, None)
        path = self.directory / name
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) != file_id:
                return  # replaced by a new file of the same name meanwhile: that one is next
            if self.config.on_done == "delete":
                path.unlink()
                self.context.log.info("ingested_file_deleted", path=str(path))
            else:
                target = _move(path, self.done_dir)
                self.context.log.info("ingested_file_moved", path=str(path), to=str(target))
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.context.log.error("ingested_file_move_failed", path=str(path), error=str(exc))
            self._stuck.add(name)
        finally:
            self.store.remove(entry)

    def fail(self, name: str, entry: FileCheckpoint | None, reason: str) -> None:
        """Move a file that cannot be ingested to failed_dir, with ``<name>.reason``."""
        path = self.directory / name
        self.context.log.error("dropped_file_failed", path=str(path), reason=reason)
        self._changes.pop(name, None)
        if entry is not None:
            self.store.remove(entry)
        try:
            target = _move(path, self.failed_dir)
            target.with_name(target.name + ".reason").write_text(reason + "\n")
        except OSError as exc:
            self.context.log.error("failed_file_move_failed", path=str(path), error=str(exc))
            self._stuck.add(name)


def _move(path: Path, directory: Path) -> Path:
    """Move ``path`` into ``directory`` without overwriting: ``name``, ``name.1``, ..."""
    target = directory / path.name
    n = 0
    while target.exists() or target.with_name(target.name + ".reason").exists():
        n += 1
        target = directory / f"{path.name}.{n}"
    try:
        os.rename(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(path, target)
    return target
