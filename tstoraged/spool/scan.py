"""Reading segment files: the frame-by-frame walk that resynchronises after damage, and
the body of a single frame.  Blocking I/O.

The walk never trusts a byte it has not checked: a header is used only after its CRC
matched, metadata only after its CRC matched, and a payload (optionally) only after its CRC
matched.  Damage is reported as a :class:`BadRegion` and the walk continues at the next
position where a complete, checksummed frame starts, so frames after a damaged spot are
still found.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from tstoraged.spool.frame import (
    HEADER_SIZE,
    MAGIC,
    FrameError,
    FrameHeader,
    decode_header,
    decode_meta,
)

_CHUNK = 1 << 20  # bounded read size: payloads are checked and copied in pieces of this size


@dataclass(frozen=True, slots=True)
class GoodFrame:
    """A frame whose header and metadata (and payload, if asked) passed their checks."""

    offset: int
    header: FrameHeader
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRegion:
    """Bytes ``[start, end)`` that are not a valid frame; ``end`` is where the walk resumed."""

    start: int
    end: int
    reason: str


def resync_in_file(path: str, start: int, end: int, min_seq: int) -> GoodFrame | None:
    """:func:`resync` on the first ``end`` bytes of the file at ``path``."""
    with open(path, "rb") as f:
        return resync(f, start, end, min_seq, True)


def payload_crc(f: BinaryIO, offset: int, length: int) -> int:
    """CRC32 of ``length`` bytes at ``offset``, read in bounded chunks; short read -> FrameError."""
    f.seek(offset)
    crc = 0
    remaining = length
    while remaining:
        chunk = f.read(min(remaining, _CHUNK))
        if not chunk:
            raise FrameError("payload ends before its length")
        crc = zlib.crc32(chunk, crc)
        remaining -= len(chunk)
    return crc


class _DamagedBody(FrameError):
    """The header is intact (so the frame's extent is known) but what it describes is not."""

    def __init__(self, reason: str, end: int) -> None:
        super().__init__(reason)
        self.end = end


def _check_frame(
    f: BinaryIO, pos: int, file_size: int, min_seq: int, verify_payload: bool
) -> GoodFrame:
    """The frame at ``pos`` if it is complete and intact, else :class:`FrameError`."""
    f.seek(pos)
    header = decode_header(f.read(HEADER_SIZE))
    if pos + header.size > file_size:
        raise FrameError("frame extends past the end of the file")
    end = pos + header.size
    if header.seq <= min_seq:
        raise _DamagedBody(f"sequence {header.seq} does not follow {min_seq}", end)
    meta_bytes = f.read(header.meta_len)
    if zlib.crc32(meta_bytes) != header.meta_crc:
        raise _DamagedBody("metadata checksum mismatch", end)
    try:
        meta = decode_meta(meta_bytes)
    except FrameError as exc:
        raise _DamagedBody(str(exc), end) from None
    if verify_payload:
        data_at = pos + HEADER_SIZE + header.meta_len
        if payload_crc(f, data_at, header.payload_len) != header.payload_crc:
            raise _DamagedBody("payload checksum mismatch", end)
    return GoodFrame(pos, header, meta)


def resync(
    f: BinaryIO, start: int, file_size: int, min_seq: int, verify_payload: bool
) -> GoodFrame | None:
    """The first intact frame that begins after ``start``, or None if there is none.

    A candidate must have the magic, a header whose CRC checks, metadata whose CRC checks and
    (if ``verify_payload``) a payload whose CRC checks, and a seq above ``min_seq``.
    """
    pos = start + 1
    while pos < file_size:
        f.seek(pos)
        window = f.read(_CHUNK + len(MAGIC) - 1)
        hit = window.find(MAGIC)
        while hit >= 0:
            try:
                return _check_frame(f, pos + hit, file_size, min_seq, verify_payload)
            except FrameError:
                hit = window.find(MAGIC, hit + 1)
        pos += _CHUNK
    return None


def walk(
    f: BinaryIO, file_size: int, *, min_seq: int = 0, verify_payload: bool
) -> Iterator[GoodFrame | BadRegion]:
    """Yield every intact frame and every damaged region of a segment, in file order.

    ``min_seq``: frames must have a larger sequence number (and increase from there on).
    ``verify_payload``: also check payload CRCs (reads the whole file) instead of only headers
    and metadata (reads a few hundred bytes per frame).
    """
    pos = 0
    while pos < file_size:
        try:
            good = _check_frame(f, pos, file_size, min_seq, verify_payload)
        except _DamagedBody as exc:
            # Only this frame is bad; its intact header says where the next one starts.
            yield BadRegion(pos, exc.end, str(exc))
            pos = exc.end
            continue
        except FrameError as exc:
            found = resync(f, pos, file_size, min_seq, verify_payload)
            yield BadRegion(pos, found.offset if found else file_size, str(exc))
            if found is None:
                return
            good = found
        yield good
        min_seq = good.header.seq
        pos = good.offset + good.header.size


def read_body(fd: int, at: int, header: FrameHeader) -> tuple[dict[str, Any] | None, bytes | None]:
    """Metadata and payload of a frame, each None if it fails its checksum."""
    meta_bytes = pread_exact(fd, header.meta_len, at)
    payload = pread_exact(fd, header.payload_len, at + header.meta_len)
    meta = None
    if zlib.crc32(meta_bytes) == header.meta_crc:
        with contextlib.suppress(FrameError):
            meta = decode_meta(meta_bytes)
    ok = zlib.crc32(payload) == header.payload_crc
    return meta, (payload if ok else None)


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer only if the file is shorter)."""
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break  # short file: the checksum comparison will fail
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
