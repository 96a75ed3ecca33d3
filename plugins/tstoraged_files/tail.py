"""Tail mode: follow files matching glob patterns, like ``tail -F``.

Every ``poll_interval`` the globs are expanded and each file's (device, inode) is compared
with the files already followed:

* an inode already followed under another name was renamed (rotated): it keeps being read
  from where it was, and is still drained for ``rotate_wait`` after it left the globs;
* a followed file that shrank below the read position, or whose first bytes changed, was
  truncated (``copytruncate``) or rewritten: its old content is *retired* and the file is read
  again from offset 0 (so its header is line 1 again);
* a new inode whose first bytes match retired content (the copy made by ``copytruncate``, or a
  rotated file renamed back into view) continues where that content was left: nothing is read
  twice. A new inode whose first bytes match a file still followed is a copy in progress and
  waits up to ``rotate_wait`` for the original's truncation;
* any other new file is read from the beginning (or, at startup without a checkpoint and with
  ``start_at = "end"``, from its end).
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import os
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tstoraged_files.checkpoint import CheckpointStore, FileCheckpoint
from tstoraged_files.identity import fingerprint_of, read_fingerprint
from tstoraged_files.reader import FileReader, find_end_of_last_line

if TYPE_CHECKING:
    from tstoraged.source import SourceContext
    from tstoraged_files.config import FilesConfig

__all__ = ["TailFollower", "excluded"]

FileId = tuple[int, int]
"""(device, inode)."""

CHUNKS_PER_TURN = 4
"""Chunks read from one file before the next file gets a turn (fairness between files)."""


@dataclass(eq=False)
class FollowedFile:
    """An open file being followed."""

    reader: FileReader
    file_id: FileId
    gone_since: float | None = None
    """Monotonic time it was first missing from the globs (rotated away or deleted)."""


def excluded(path: str, patterns: list[str]) -> bool:
    """True when the file name of ``path`` matches one of the ``exclude`` patterns."""
    name = os.path.basename(path)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class TailFollower:
    """Follows the files of one tail-mode source until cancelled."""

    def __init__(self, config: FilesConfig, context: SourceContext, store: CheckpointStore) -> None:
        self.config = config
        self.context = context
        self.store = store
        self.followed: dict[FileId, FollowedFile] = {}
        self._retired_positions: dict[FileCheckpoint, tuple[int, int]] = {}
        """Where reading of retired content had got to (emitted, maybe not yet acked)."""
        self._copies: dict[FileId, float] = {}
        """New inodes that look like a copy of a followed file, and since when."""
        self._unreadable: dict[FileId, tuple[float, str, str]] = {}
        """Files that could not be opened: when, path, error (retried after a while)."""
        self._reported: dict[str, str] = {}
        """The unreadable files last reported as the source's problem (path -> error)."""

    async def run(self) -> None:
        """Poll, read and emit until cancelled."""
        first_scan = True
        while True:
            more = await self.poll(first_scan=first_scan)
            first_scan = False
            await asyncio.sleep(0 if more else self.config.poll_interval)

    def close(self) -> None:
        """Close every open file."""
        for followed in self.followed.values():
            os.close(followed.reader.fd)
        self.followed.clear()

    async def poll(self, *, first_scan: bool = False) -> bool:
        """One round: rescan, detect rotation/truncation, read. True if data is left to read."""
        found = self._scan()
        now = time.monotonic()
        if first_scan:
            # Files that vanished or were rotated out of the globs while the source was
            # stopped: their positions are kept (retired) in case the content shows up again.
            for entry in self.store.entries:
                if not entry.retired and (entry.dev, entry.ino) not in found:
                    self._retire_entry(entry)
        for file_id, followed in self.followed.items():
            path = found.get(file_id)
            if path is None:
                if followed.gone_since is None:
                    followed.gone_since = now
            else:
                followed.gone_since = None
                if path != followed.reader.path:
                    self.context.log.info("file_renamed", old=followed.reader.path, new=path)
                    followed.reader.path = path
            self._check_rewritten(followed)
        self._forget_stale(found, now)
        new = [fid for fid in found if fid not in self.followed and fid not in self._unreadable]
        # Files with a checkpoint for their own inode first: at startup a copy must not claim
        # content whose original has not been looked at yet.
        new.sort(key=lambda fid: self.store.find_live(*fid) is None)
        for file_id in new:
            self._open(file_id, found[file_id], first_scan=first_scan, now=now)
        self._report_unreadable()
        more = False
        for followed in list(self.followed.values()):
            read = await followed.reader.pump(CHUNKS_PER_TURN)
            more = more or read >= CHUNKS_PER_TURN * followed.reader.chunk_bytes
        self._close_gone(now)
        return more

    def _forget_stale(self, found: dict[FileId, str], now: float) -> None:
        """Drop bookkeeping of files that are gone, and let unreadable files be retried."""
        for file_id, (failed_at, _, _) in list(self._unreadable.items()):
            if file_id not in found or now - failed_at >= self.config.unreadable_retry_interval:
                del self._unreadable[file_id]
        for file_id in [fid for fid in self._copies if fid not in found]:
            del self._copies[file_id]
        live = set(self.store.entries)
        for entry in [e for e in self._retired_positions if e not in live]:
            del self._retired_positions[entry]

    def _scan(self) -> dict[FileId, str]:
        found: dict[FileId, str] = {}
        for pattern in self.config.paths:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if excluded(path, self.config.exclude):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished between glob and stat
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), path)
        return found

    def _report_unreadable(self) -> None:
        """Files that cannot be opened are the source's problem until they can (or are gone)."""
        current = {path: error for _, path, error in self._unreadable.values()}
        if current == self._reported:
            return
        self._reported = current
        self.context.set_details({"unreadable_files": current})
        if not current:
            self.context.set_problem(None)
            return
        path, error = min(current.items())
        more = f" (and {len(current) - 1} more files)" if len(current) > 1 else ""
        retry = self.config.unreadable_retry_interval
        self.context.set_problem(f"cannot read {path}: {error}{more}; retried every {retry:g}s")

    def _check_rewritten(self, followed: FollowedFile) -> None:
        reader = followed.reader
        entry = reader.entry
        size = os.fstat(reader.fd).st_size
        if size < reader.read_offset or not entry.fingerprint.matches(reader.fd):
            self.context.log.info(
                "file_truncated",
                path=reader.path,
                size=size,
                offset=reader.read_offset,
            )
            self._retire(reader)
            fresh = self.store.add(
                FileCheckpoint(*followed.file_id, fingerprint_of(b""), reader.path)
            )
            followed.reader = self._reader(reader.fd, reader.path, fresh, 0, 0)

    def _retire(self, reader: FileReader) -> None:
        self._retired_positions[reader.entry] = reader.position
        self._retire_entry(reader.entry)

    def _retire_entry(self, entry: FileCheckpoint) -> None:
        # The content left its inode (truncated, inode reused) or the globs (rotated away):
        # keep its position a while, so it is recognised if it shows up again.
        entry.retired = True
        entry.seen = time.time()
        self.store.changed()

    def _open(self, file_id: FileId, path: str, *, first_scan: bool, now: float) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.context.log.error("file_open_failed", path=path, error=str(exc))
            self._unreadable[file_id] = (now, path, exc.strerror or str(exc))
            return
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != file_id:  # replaced between scan and open: next round
            os.close(fd)
            return
        entry, offset, line = self._position(fd, file_id, path, st.st_size, first_scan, now)
        if entry is None:
            os.close(fd)
            return
        self._copies.pop(file_id, None)
        self.followed[file_id] = FollowedFile(self._reader(fd, path, entry, offset, line), file_id)
        self.context.log.info("file_opened", path=path, offset=offset, line=line)

    def _position(
        self, fd: int, file_id: FileId, path: str, size: int, first_scan: bool, now: float
    ) -> tuple[FileCheckpoint | None, int, int]:
        """Which checkpoint a newly seen file continues, and from where (None: not yet)."""
        entry = self.store.find_live(*file_id)
        if entry is not None:
            if entry.fingerprint.matches(fd) and size >= entry.offset:
                entry.path = path
                return entry, entry.offset, entry.line
            self._retire_entry(entry)  # truncated while stopped, or the inode was reused
        if size:
            retired = self._retired_content(fd, size)
            if retired is not None:
                offset, line = self._retired_positions.pop(retired, (retired.offset, retired.line))
                retired.dev, retired.ino = file_id
                retired.path, retired.retired = path, False
                self.store.changed()
                self.context.log.info("file_continued", path=path)
                return retired, offset, line
            if self._copy_of_followed(fd):
                since = self._copies.setdefault(file_id, now)
                if now - since < self.config.rotate_wait:
                    return None, 0, 0
        offset = line = 0
        if first_scan and self.config.start_at == "end":
            offset, line = find_end_of_last_line(fd, size, self.config.read_chunk_bytes)
        # The fingerprint covers what was read (here: skipped); the reader extends it.
        head = read_fingerprint(fd, min(offset, self.config.fingerprint_bytes))
        fresh = FileCheckpoint(*file_id, head, path, offset, line)
        return self.store.add(fresh), offset, line

    def _retired_content(self, fd: int, size: int) -> FileCheckpoint | None:
        for entry in self.store.entries:
            if not entry.retired or not entry.fingerprint.length:
                continue
            # Continuing skips everything before the position: the file must reach it, and
            # the fingerprint must vouch for all of it (or be full length), else a file merely
            # starting alike (a truncated one, or one with the same header) would lose data.
            offset = self._retired_positions.get(entry, (entry.offset, 0))[0]
            if offset > size:
                continue
            covered = entry.fingerprint.length >= min(offset, self.config.fingerprint_bytes)
            if covered and entry.fingerprint.matches(fd):
                return entry
        return None

    def _copy_of_followed(self, fd: int) -> bool:
        # Only a full-length fingerprint says "copy": a short one may be just a CSV header.
        full = self.config.fingerprint_bytes
        return any(
            f.reader.entry.fingerprint.length == full and f.reader.entry.fingerprint.matches(fd)
            for f in self.followed.values()
        )

    def _close_gone(self, now: float) -> None:
        for file_id, followed in list(self.followed.items()):
            if followed.gone_since is None:
                continue
            reader = followed.reader
            st = os.fstat(reader.fd)
            if reader.read_offset < st.st_size:
                continue  # still draining
            if st.st_nlink and now - followed.gone_since < self.config.rotate_wait:
                continue  # the writer may still append to the rotated file
            os.close(reader.fd)
            del self.followed[file_id]
            if st.st_nlink:
                self.context.log.info("rotated_file_closed", path=reader.path)
                self._retire(reader)
            else:
                self.context.log.info("file_deleted", path=reader.path)
                self.store.remove(reader.entry)

    def _reader(
        self, fd: int, path: str, entry: FileCheckpoint, offset: int, line: int
    ) -> FileReader:
        return FileReader(
            self.context, self.store, self.config, fd, path, entry, position=(offset, line)
        )
