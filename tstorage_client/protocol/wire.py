"""Constants and fixed-layout structs of the TStorage connector protocol (little-endian)."""

from __future__ import annotations

import enum
import struct

from tstorage_client.record import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN

__all__ = [
    "ACQ_RANGE_STRUCT",
    "ACQ_STRUCT",
    "GET_RANGE_STRUCT",
    "HEADER",
    "INT32",
    "KEY",
    "KEY_SIZE",
    "MAX_PAYLOAD",
    "PUTA_KEY",
    "PUT_KEY",
    "RequestType",
]


class RequestType(enum.IntEnum):
    """Request types of the header's first field."""

    NULL = 0
    GET = 1
    PUT = 5
    PUTA = 6
    GET_ACQ = 7


HEADER = struct.Struct("<iQ")  # type / status, size
INT32 = struct.Struct("<i")
KEY = struct.Struct("<iqiqq")  # cid, mid, moid, cap, acq
KEY_SIZE = KEY.size  # 32
GET_RANGE_STRUCT = struct.Struct("<iqiqqiqiqq")  # keyMin, keyMax
PUT_KEY = struct.Struct("<qiq")  # mid, moid, cap (20 B)
PUTA_KEY = struct.Struct("<qiqq")  # mid, moid, cap, acq (28 B)
ACQ_STRUCT = struct.Struct("<q")
ACQ_RANGE_STRUCT = struct.Struct("<qq")
BATCH_HEADER = struct.Struct("<ii")  # cid, batch_bytes

MAX_PAYLOAD = 32 * 1024 * 1024
"""Largest payload a record may carry (32 MiB)."""

END_GUARD = INT32.pack(-1)

HEADER_SIZE = HEADER.size  # 12

# Ranges of the key components, re-exported for the codec modules.
RANGES = {
    "cid": (0, INT32_MAX),
    "mid": (INT64_MIN, INT64_MAX),
    "moid": (INT32_MIN, INT32_MAX),
    "cap": (INT64_MIN, INT64_MAX),
    "acq": (INT64_MIN, INT64_MAX),
}
