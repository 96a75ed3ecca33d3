"""The few file-system calls the spool makes, gathered so tests can inject failures.

Production code uses :data:`REAL_DISK`; a test passes a :class:`DiskIO` whose ``fsync`` records
calls, whose ``writev`` raises ``OSError(ENOSPC)``, or whose ``statvfs`` reports a nearly full
disk, and so observes the spool's behaviour without a real full disk or power cut.
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tstoraged.spool.frame import FrameError
from tstoraged.spool.reports import SpoolError

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class DiskIO:
    """Injectable system calls (same signatures as the ``os`` functions they stand for)."""

    writev: Callable[[int, Sequence[Buffer]], int] = os.writev
    fsync: Callable[[int], None] = os.fsync
    statvfs: Callable[[str], Any] = os.statvfs

    def write_all(self, fd: int, buffers: Sequence[Buffer]) -> None:
        """Write every byte of ``buffers`` (writev may write less than asked)."""
        views = [memoryview(b) for b in buffers if len(b)]
        while views:
            done = self.writev(fd, views)
            while views and done >= len(views[0]):
                done -= len(views[0])
                views.pop(0)
            if views and done:
                views[0] = views[0][done:]

    def free_bytes(self, directory: str) -> int:
        """Bytes an unprivileged writer may still use on the file system of ``directory``."""
        st = self.statvfs(directory)
        return int(st.f_bavail) * int(st.f_frsize)

    def fsync_dir(self, directory: str) -> None:
        """Make creations, renames and deletions in ``directory`` durable."""
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

    def replace_atomically(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` so that after a crash it is either the old or new content."""
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                self.write_all(fd, [data])
                self.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            os.unlink(tmp)  # e.g. ENOSPC: do not leave a partial file taking space
            raise
        os.replace(tmp, path)
        self.fsync_dir(os.path.dirname(path) or ".")


REAL_DISK = DiskIO()

LOCK_FILE = "lock"


def lock_directory(directory: str) -> int:
    """Take the spool's exclusive lock: two processes appending to one spool would corrupt it.

    An flock dies with its process, so a killed daemon never leaves a stale lock behind.
    """
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolError(f"spool {directory} is in use by another process") from None
    return fd


_CURSOR = struct.Struct("<8sQQI")
_CURSOR_MAGIC = b"TSPCUR1\n"


@dataclass(frozen=True, slots=True)
class Cursor:
    """What the spool remembers outside the segments: the commit point and the seq counter."""

    committed_seq: int
    next_seq: int


def encode_cursor(cursor: Cursor) -> bytes:
    """The content of the cursor file: magic, committed seq, next seq, CRC."""
    body = _CURSOR.pack(_CURSOR_MAGIC, cursor.committed_seq, cursor.next_seq, 0)[:-4]
    return body + zlib.crc32(body).to_bytes(4, "little")


def decode_cursor(data: bytes) -> Cursor:
    """The cursor stored by :func:`encode_cursor`; :class:`FrameError` if damaged."""
    if len(data) != _CURSOR.size:
        raise FrameError(f"cursor file has {len(data)} bytes, expected {_CURSOR.size}")
    magic, committed, next_seq, crc = _CURSOR.unpack(data)
    if magic != _CURSOR_MAGIC or zlib.crc32(data[:-4]) != crc:
        raise FrameError("cursor file checksum mismatch")
    return Cursor(int(committed), int(next_seq))
