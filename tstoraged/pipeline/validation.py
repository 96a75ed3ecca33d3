"""Client-side checks of records before they are sent.

TStorage silently drops a record whose key has a component at its maximum value and answers
OK; a negative cid ends the client's put stream; an out-of-range component or a payload over
32 MiB cannot be encoded. Such records are dead-lettered instead of being sent or retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter

from tstorage_client.protocol.wire import MAX_PAYLOAD
from tstorage_client.record import (
    ACQ_MAX,
    ACQ_MIN,
    CAP_MAX,
    CAP_MIN,
    CID_MAX,
    CID_MIN,
    MID_MAX,
    MID_MIN,
    MOID_MAX,
    MOID_MIN,
    Record,
)
from tstoraged.pipeline.settings import WriteMode

__all__ = ["invalid_records", "record_problem"]

# (name, lowest valid, highest storable): the maximum itself is silently dropped by TStorage.
_COMPONENTS = (
    ("cid", CID_MIN, CID_MAX - 1),
    ("mid", MID_MIN, MID_MAX - 1),
    ("moid", MOID_MIN, MOID_MAX - 1),
    ("cap", CAP_MIN, CAP_MAX - 1),
    ("acq", ACQ_MIN, ACQ_MAX - 1),
)
# A record is the flat tuple (cid, mid, moid, cap, acq, payload).
_payload_of = itemgetter(5)


def record_problem(record: Record[bytes], write_mode: WriteMode) -> str | None:
    """Why ``record`` must not be sent, or None when it is fine."""
    if not isinstance(record, Record):
        return f"not a record: {type(record).__name__}"
    key, payload = record[:5], record[5]
    checked = _COMPONENTS if write_mode == "puta" else _COMPONENTS[:4]
    try:
        for index, (name, low, high) in enumerate(checked):
            value = key[index]
            if type(value) is not int:
                return f"key.{name} is not an integer: {value!r}"
            if value < low:
                return f"key.{name} {value} is below {low}"
            if value == high + 1:
                return f"key.{name} is at its maximum {value}: TStorage would drop it silently"
            if value > high:
                return f"key.{name} {value} is above the maximum {high + 1}"
    except (TypeError, IndexError):
        return f"not a key: {key!r}"
    if not isinstance(payload, bytes | bytearray | memoryview):
        return f"payload is not bytes: {type(payload).__name__}"
    if len(payload) > MAX_PAYLOAD:
        return f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}"
    return None


def _all_valid(records: Sequence[Record[bytes]], write_mode: WriteMode) -> bool:
    """Fast check at C speed (min/max per component); False means "look closer"."""
    try:
        if set(map(type, records)) != {Record}:
            return False
        checked = _COMPONENTS if write_mode == "puta" else _COMPONENTS[:4]
        for index, (_, low, high) in enumerate(checked):
            values = list(map(itemgetter(index), records))
            if min(values) < low or max(values) > high:
                return False
            # bool and float compare like ints; only exact ints are keys.
            if set(map(type, values)) != {int}:
                return False
        payloads = list(map(_payload_of, records))
        if set(map(type, payloads)) - {bytes, bytearray, memoryview}:
            return False
        return max(map(len, payloads)) <= MAX_PAYLOAD
    except (TypeError, ValueError, IndexError):
        return False


def invalid_records(
    records: Sequence[Record[bytes]], write_mode: WriteMode
) -> list[tuple[int, str]]:
    """Indices and reasons of the records that must not be sent (usually none)."""
    if not records or _all_valid(records, write_mode):
        return []
    problems = []
    for index, record in enumerate(records):
        problem = record_problem(record, write_mode)
        if problem is not None:
            problems.append((index, problem))
    return problems
