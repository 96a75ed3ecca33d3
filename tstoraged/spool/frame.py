"""The on-disk frame of one spooled batch: encoding and header validation, no I/O.

Layout (little endian), ``HEADER_SIZE`` = 48 bytes, then the metadata, then the payload::

    0  magic        4s   b"TSPF"
    4  version      B    1
    5  flags        B    0 (reserved)
    6  reserved     H    0
    8  seq          Q    sequence number, strictly increasing across the spool
    16 appended_ns  Q    wall clock (time.time_ns) when the batch was appended
    24 meta_len     I    length of the JSON metadata
    28 payload_len  I    length of the opaque payload
    32 meta_crc     I    zlib.crc32 of the metadata bytes
    36 payload_crc  I    zlib.crc32 of the payload bytes
    40 header_crc   I    zlib.crc32 of bytes 0..39
    44 reserved     I    0

The header has its own CRC so that its lengths can be trusted before anything is read past it:
a torn or flipped length can never make a reader allocate or skip an absurd amount.  Metadata
and payload have separate CRCs so that a recovery walk can verify headers and metadata (small)
and leave the payload (large) to be verified when it is read.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"TSPF"
VERSION = 1
_HEADER = struct.Struct("<4sBBHQQIIIII4x")
HEADER_SIZE = _HEADER.size
_CRC_SPAN = 40  # header bytes covered by header_crc
# Upper bounds that no legitimate frame exceeds; a header claiming more is corrupt.
MAX_META_LEN = 1 << 20
MAX_PAYLOAD_LEN = (1 << 31) - 1

assert HEADER_SIZE == 48


class FrameError(ValueError):
    """The bytes at this position are not a valid frame (torn, flipped or foreign)."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fixed part of a frame, already validated against its own CRC."""

    seq: int
    appended_ns: int
    meta_len: int
    payload_len: int
    meta_crc: int
    payload_crc: int

    @property
    def size(self) -> int:
        """Total bytes of the frame on disk (header + metadata + payload)."""
        return HEADER_SIZE + self.meta_len + self.payload_len


def encode_meta(meta: dict[str, Any]) -> bytes:
    """Serialize batch metadata (must be JSON-able) compactly and deterministically."""
    data = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_META_LEN:
        raise ValueError(f"batch metadata is {len(data)} bytes, more than {MAX_META_LEN}")
    return data


def decode_meta(data: bytes) -> dict[str, Any]:
    """Parse metadata written by :func:`encode_meta`; :class:`FrameError` if it is not a dict."""
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise FrameError("metadata is not a JSON object")
    return meta


def encode_header(
    seq: int, appended_ns: int, meta: bytes, payload: bytes | bytearray | memoryview
) -> tuple[FrameHeader, bytes]:
    """The header (parsed, and as its 48 bytes) of a frame carrying ``meta`` and ``payload``."""
    if len(payload) > MAX_PAYLOAD_LEN:
        raise ValueError(f"batch payload is {len(payload)} bytes, more than {MAX_PAYLOAD_LEN}")
    header = FrameHeader(
        seq, appended_ns, len(meta), len(payload), zlib.crc32(meta), zlib.crc32(payload)
    )
    head = _HEADER.pack(
        MAGIC,
        VERSION,
        0,
        0,
        header.seq,
        header.appended_ns,
        header.meta_len,
        header.payload_len,
        header.meta_crc,
        header.payload_crc,
        0,
    )
    crc = zlib.crc32(head[:_CRC_SPAN])
    return header, head[:_CRC_SPAN] + struct.pack("<I", crc) + head[_CRC_SPAN + 4 :]


def decode_header(data: bytes) -> FrameHeader:
    """Validate and parse a header; :class:`FrameError` if it is not a frame header."""
    if len(data) < HEADER_SIZE:
        raise FrameError(f"short header ({len(data)} of {HEADER_SIZE} bytes)")
    (
        magic,
        version,
        _flags,
        _res,
        seq,
        appended_ns,
        meta_len,
        payload_len,
        meta_crc,
        payload_crc,
        crc,
    ) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad magic")
    if zlib.crc32(data[:_CRC_SPAN]) != crc:
        raise FrameError("header checksum mismatch")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version}")
    if meta_len > MAX_META_LEN:
        raise FrameError(f"metadata length {meta_len} out of range")
    return FrameHeader(seq, appended_ns, meta_len, payload_len, meta_crc, payload_crc)
