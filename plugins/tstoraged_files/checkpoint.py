"""Per-file read positions, persisted in the source's state directory.

A :class:`FileCheckpoint` says: of the file with this identity, everything before ``offset``
(lines ``1 .. line``) has been acknowledged by the pipeline. Positions only move when an ack
arrives, so a restart re-reads exactly what was not yet durable (at-least-once).

The :class:`CheckpointStore` writes all positions as one small JSON file, atomically (temp
file, fsync, rename, fsync of the directory): a crash leaves the old or the new file, never a
torn one. Writes are coalesced to one per ``interval`` while data flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tstoraged_files.identity import Fingerprint, read_fingerprint

if TYPE_CHECKING:
    import structlog

__all__ = ["CheckpointStore", "FileCheckpoint"]

FILE_NAME = "checkpoints.json"
FORMAT_VERSION = 1
RETIRED_TTL_S = 7 * 86_400
"""How long the position of content no longer under the globs is remembered."""


@dataclass(eq=False)
class FileCheckpoint:
    """The acknowledged position in one file (identified by device, inode and fingerprint)."""

    dev: int
    ino: int
    fingerprint: Fingerprint
    path: str
    offset: int = 0
    line: int = 0
    retired: bool = False
    """The content left its inode (truncated) or the globs (rotated away); kept so a copy or
    a rename back into view is recognised by its fingerprint and not read twice."""
    seen: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["fingerprint"] = self.fingerprint.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FileCheckpoint:
        """The inverse of :meth:`to_json`."""
        fields = dict(data)
        fingerprint = Fingerprint.from_json(fields.pop("fingerprint"))
        return cls(fingerprint=fingerprint, **fields)  # type: ignore[arg-type]


def _extends(newer: Fingerprint, older: Fingerprint) -> bool:
    """Whether ``newer`` can describe the same content as ``older`` (equal, or longer)."""
    if newer.length == older.length:
        return newer.digest == older.digest
    return newer.length > older.length


_STORES: weakref.WeakValueDictionary[Path, CheckpointStore] = weakref.WeakValueDictionary()
"""The newest store of each checkpoint file in this process."""


class CheckpointStore:
    """All checkpoints of one source, loaded at start and saved atomically."""

    def __init__(self, state_dir: Path, *, interval: float = 1.0) -> None:
        self.path = state_dir / FILE_NAME
        self.interval = interval
        self.entries: list[FileCheckpoint] = []
        self._dirty = asyncio.Event()
        self._closed = False
        self._successor: CheckpointStore | None = None
        # A source restarted in this process (reload, restart after an error) takes over the
        # positions of the stopped instance, whose acks may still be arriving: both then move
        # the same entries, and only the new store writes the file.
        previous = _STORES.get(self.path)
        if previous is not None:
            previous._successor = self
            self.entries = previous.entries
        else:
            self._load()
        _STORES[self.path] = self

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: unknown checkpoint format {data.get('version')!r}")
        now = time.time()
        self.entries = [
            entry
            for entry in map(FileCheckpoint.from_json, data["files"])
            if not entry.retired or now - entry.seen < RETIRED_TTL_S
        ]

    def merge_durable(self, durable: Mapping[str, Any]) -> int:
        """Take positions the core stored with the records (spool) when they are further on.

        After a crash the spool may hold records whose acks never reached this store's file;
        their positions came back from ``context.durable_checkpoints()``. A position applies
        to the entry of the same device and inode whose fingerprint it extends; a file the
        store never saw is added. Returns how many positions moved.
        """
        moved = 0
        for data in durable.values():
            try:
                position = FileCheckpoint.from_json(dict(data))
            except (KeyError, TypeError, ValueError):
                continue
            same_inode = [e for e in self.entries if (e.dev, e.ino) == (position.dev, position.ino)]
            if not same_inode:
                self.add(position)
                moved += 1
                continue
            for entry in same_inode:
                if not _extends(position.fingerprint, entry.fingerprint):
                    continue  # the inode was reused for other content
                if position.offset > entry.offset:
                    entry.offset, entry.line = position.offset, position.line
                    entry.fingerprint = position.fingerprint
                    moved += 1
                    self.changed()
                break
        return moved

    @staticmethod
    def durable_name(entry: FileCheckpoint) -> str:
        """The name of an entry's position in ``emit(..., checkpoint=...)``."""
        return f"{entry.dev}:{entry.ino}"

    def add(self, entry: FileCheckpoint) -> FileCheckpoint:
        """Track a new file's position."""
        self.entries.append(entry)
        self.changed()
        return entry

    def remove(self, entry: FileCheckpoint) -> None:
        """Forget a file (deleted, or a dropped file that was moved away)."""
        with contextlib.suppress(ValueError):
            self.entries.remove(entry)
            self.changed()

    def find_live(self, dev: int, ino: int) -> FileCheckpoint | None:
        """The position of the content currently held by inode ``(dev, ino)``, if any."""
        for entry in self.entries:
            if entry.ino == ino and entry.dev == dev and not entry.retired:
                return entry
        return None

    def for_whole_file(
        self, fd: int, st: os.stat_result, path: str, fingerprint_bytes: int
    ) -> FileCheckpoint:
        """The checkpoint of a file read once to its end (drop and once modes).

        Its own when the inode still holds the content it was made for, else a new one at 0.
        """
        entry = self.find_live(st.st_dev, st.st_ino)
        if entry is not None:
            if entry.fingerprint.matches(fd) and entry.offset <= st.st_size:
                return entry
            self.remove(entry)  # the inode holds another file now
        fingerprint = read_fingerprint(fd, fingerprint_bytes)
        return self.add(FileCheckpoint(st.st_dev, st.st_ino, fingerprint, path))

    def advance(self, entry: FileCheckpoint, offset: int, line: int) -> None:
        """Records up to ``offset`` are acknowledged (called from an ack, in order).

        Positions only move forward: a restarted instance re-reads lines whose acks from the
        previous instance may arrive after its own.
        """
        if offset > entry.offset:
            entry.offset = offset
            entry.line = line
            self.changed()

    def changed(self) -> None:
        """Schedule a write; after :meth:`close` (late acks of a stopped source) write now."""
        if self._successor is not None:
            self._successor.changed()
        elif self._closed:
            self.save()
        else:
            self._dirty.set()

    async def run(self, log: structlog.typing.FilteringBoundLogger) -> None:
        """Write changes, at most once per ``interval``, until cancelled.

        A failed write (disk full, read-only state directory) is logged and tried again:
        positions only fall behind, which means lines are read again after a restart.
        """
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.interval)
            try:
                self.save()
            except OSError as exc:
                log.error("checkpoints_write_failed", path=str(self.path), error=str(exc))
                self._dirty.set()

    def close(self) -> None:
        """Write pending changes; from now on every change is written at once."""
        self._closed = True
        if self._dirty.is_set() and self._successor is None:
            self.save()

    def save(self) -> None:
        """Atomically replace the checkpoint file with the current positions."""
        self._dirty.clear()
        payload = json.dumps(
            {"version": FORMAT_VERSION, "files": [e.to_json() for e in self.entries]},
            separators=(",", ":"),
        ).encode()
        tmp = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
