"""Opening a spool directory after a clean stop, a crash or a power cut.  Blocking I/O.

What recovery guarantees when it returns: every live segment file consists of intact frames
only (headers and metadata checked; the payloads of the newest segment checked too, since
only that one can hold writes that never reached the disk), seqs increase across the
segments, and every damaged byte has either been cut (a torn tail) or put in quarantine.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import BinaryIO

import structlog

from tstoraged.spool.diskio import Cursor, DiskIO, decode_cursor, encode_cursor
from tstoraged.spool.frame import FrameError
from tstoraged.spool.quarantine import Quarantine
from tstoraged.spool.reports import QuarantinedSegment
from tstoraged.spool.scan import BadRegion, GoodFrame, walk
from tstoraged.spool.segment import (
    SEGMENT_SUFFIX,
    Segment,
    parse_segment_name,
    segment_name,
)

CURSOR_FILE = "cursor"
_SALVAGE_SUFFIX = ".salvage"
_COPY_CHUNK = 1 << 20

log = structlog.get_logger("tstoraged.spool")


@dataclass
class Recovered:
    """The state of a spool directory, ready to be used."""

    segments: list[Segment]
    cursor: Cursor
    torn_tails_cut: int = 0
    quarantined: list[QuarantinedSegment] = field(default_factory=list)


def read_cursor(directory: str) -> Cursor:
    """The persisted cursor; a missing or damaged one means "nothing committed" (replay all)."""
    path = os.path.join(directory, CURSOR_FILE)
    try:
        with open(path, "rb") as f:
            return decode_cursor(f.read(64))
    except FileNotFoundError:
        return Cursor(0, 1)
    except (OSError, FrameError) as exc:
        log.warning("spool_cursor_read_failed", path=path, error=str(exc))
        return Cursor(0, 1)


def write_cursor(directory: str, cursor: Cursor, disk: DiskIO) -> None:
    """Persist ``cursor`` atomically (temp file, fsync, rename, fsync of the directory)."""
    disk.replace_atomically(os.path.join(directory, CURSOR_FILE), encode_cursor(cursor))


def recover(directory: str, disk: DiskIO, quarantine: Quarantine) -> Recovered:
    """Check and repair every segment in ``directory``; see the module docstring."""
    os.makedirs(directory, exist_ok=True)
    cursor = read_cursor(directory)
    result = Recovered([], cursor)
    candidates: list[tuple[int, str]] = []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        base = parse_segment_name(name)
        if base is not None and os.path.isfile(path):
            candidates.append((base, path))
        elif name.endswith((_SALVAGE_SUFFIX, ".tmp")) and os.path.isfile(path):
            # Leftover of an interrupted salvage or cursor write; the original is still there.
            os.unlink(path)
        elif SEGMENT_SUFFIX in name:
            # Looks like ours but is not a segment (renamed by hand?): say so, leave it alone.
            log.warning("spool_foreign_file_ignored", path=path)
        # Anything else (cursor, lock, quarantine/, files the application keeps next to the
        # spool) is none of recovery's business.
    candidates.sort()
    last_seq = 0
    for index, (_base, path) in enumerate(candidates):
        newest = index == len(candidates) - 1
        segment = _recover_segment(path, last_seq, newest, disk, quarantine, result)
        if segment is None:
            continue
        last_seq = segment.last_seq
        if segment.last_seq <= cursor.committed_seq:
            os.unlink(path)  # fully committed; the crash came before its deletion
            continue
        result.segments.append(segment)
    next_seq = max(cursor.next_seq, cursor.committed_seq + 1, last_seq + 1)
    result.cursor = Cursor(cursor.committed_seq, next_seq)
    disk.fsync_dir(directory)
    return result


def _recover_segment(
    path: str,
    min_seq: int,
    newest: bool,
    disk: DiskIO,
    quarantine: Quarantine,
    result: Recovered,
) -> Segment | None:
    """Check one segment; cut, salvage or quarantine as needed; None if nothing is left."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        items = list(walk(f, size, min_seq=min_seq, verify_payload=newest))
    bad = [item for item in items if isinstance(item, BadRegion)]
    if newest and bad and bad[-1].end == size:
        # Nothing intact follows: an append that never completed (crash, power loss).
        tail = bad.pop()
        _truncate(path, tail.start, disk)
        result.torn_tails_cut += 1
        log.warning("spool_torn_tail_cut", segment=path, offset=tail.start, bytes=size - tail.start)
        items = [i for i in items if isinstance(i, GoodFrame)]
    if bad:
        reason = "; ".join(f"bytes {b.start}..{b.end}: {b.reason}" for b in bad)
        items = _salvage(path, min_seq, disk, quarantine, reason, result)
    segment = Segment(path)
    for item in items:
        if isinstance(item, GoodFrame):
            segment.add(item.header, item.meta)
    if not segment.frames:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        # What a killed process wrote may still be only in the page cache: make it durable
        # before it counts as such (cheap when it already is).
        disk.fsync(fd)
    finally:
        os.close(fd)
    proper = os.path.join(os.path.dirname(path), segment_name(segment.first_seq))
    if proper != path and not os.path.exists(proper):
        # The name must be the first seq, so that names sort like seqs and new segment
        # names never collide with an old one.
        os.replace(path, proper)
        segment.path = proper
    return segment


def _truncate(path: str, length: int, disk: DiskIO) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, length)
        disk.fsync(fd)
    finally:
        os.close(fd)


def _salvage(
    path: str,
    min_seq: int,
    disk: DiskIO,
    quarantine: Quarantine,
    reason: str,
    result: Recovered,
) -> list[GoodFrame | BadRegion]:
    """Quarantine ``path`` and replace it by a file holding only its fully intact frames.

    Crash-safe: the intact frames go to a temporary file that is fsynced, the original is
    linked into quarantine, and only then is the temporary renamed over the original.
    """
    salvage_path = path + _SALVAGE_SUFFIX
    kept: list[GoodFrame | BadRegion] = []
    with open(path, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        frames = walk(src, size, min_seq=min_seq, verify_payload=True)
        good = [i for i in frames if isinstance(i, GoodFrame)]
        if good:
            fd = os.open(salvage_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for frame in good:
                    _copy_range(src, fd, frame.offset, frame.header.size, disk)
                disk.fsync(fd)
            finally:
                os.close(fd)
            kept = list(good)
    entry = quarantine.add(path, reason, move=not good)
    if good:
        os.replace(salvage_path, path)
    disk.fsync_dir(os.path.dirname(path))
    result.quarantined.append(entry)
    log.error(
        "spool_segment_quarantined",
        segment=path,
        quarantined_as=entry.file,
        reason=reason,
        frames_kept=len(kept),
    )
    return kept


def _copy_range(src: BinaryIO, fd: int, offset: int, length: int, disk: DiskIO) -> None:
    src.seek(offset)
    remaining = length
    while remaining:
        chunk = src.read(min(remaining, _COPY_CHUNK))
        if not chunk:
            raise FrameError("segment shrank while being salvaged")
        disk.write_all(fd, [chunk])
        remaining -= len(chunk)
