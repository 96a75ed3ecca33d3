"""Server rules of the protocol doc that do not depend on the storage backend."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from tstorage_client.protocol.server import PutaRow, PutRow, RecordRun
from tstorage_client.record import ACQ_MAX, CAP_MAX, CID_MAX, MID_MAX, MOID_MAX, Key

__all__ = ["Rows", "range_error", "storable_rows"]

Rows = list[PutRow] | list[PutaRow] | RecordRun
"""The records of one PUT / PUTA batch as the parser hands them out."""

_mid, _moid, _cap, _puta_acq = itemgetter(1), itemgetter(2), itemgetter(3), itemgetter(4)
# Every key maximum (int32 or int64) ends in these little-endian bytes: a run whose bytes do
# not contain them anywhere holds no key at a maximum.
_MAX_TAIL = b"\xff\xff\xff\x7f"


def range_error(
    key_min: Key, key_max: Key, current_acq: int, *, allow_empty: bool = False
) -> str | None:
    """Why the GET / GET_ACQ box is invalid, or None when it is valid.

    Invalid: a negative cid in either key, a box that is empty in any component (keyMin not
    strictly below keyMax; GET only: GET_ACQ passes ``allow_empty``, as real TStorage answers
    an empty box OK), or keyMin.acq in the future (above ``current_acq``).
    """
    if key_min.cid < 0 or key_max.cid < 0:
        return f"negative cid in range {tuple(key_min)}..{tuple(key_max)}"
    if not allow_empty:
        for name, low, high in zip(Key._fields, key_min, key_max, strict=True):
            if low >= high:
                return f"empty range: keyMin.{name}={low} is not below keyMax.{name}={high}"
    if key_min.acq > current_acq:
        return f"keyMin.acq={key_min.acq} lies in the future (current acq {current_acq})"
    return None


def storable_rows(cid: int, rows: Rows, with_acq: bool) -> Rows:
    """The rows of a PUT / PUTA batch that are stored: keys with a component at its maximum are not.

    TStorage answers such a PUT OK but silently drops those records; so do we. Rows are
    ``(n, mid, moid, cap, [acq,] payload)`` tuples or a :class:`RecordRun`; the scan for
    maxima runs at C speed (a run is one byte search) and the per-row filter only when one
    may be present.
    """
    if cid == CID_MAX:
        return []
    if isinstance(rows, RecordRun):
        if _MAX_TAIL not in rows.data:
            return rows
        decoded: list[Any] = list(rows)
        rows = decoded
    if (
        MID_MAX in map(_mid, rows)
        or MOID_MAX in map(_moid, rows)
        or CAP_MAX in map(_cap, rows)
        or (with_acq and ACQ_MAX in map(_puta_acq, rows))
    ):
        kept: list[Any] = [
            row
            for row in rows
            if row[1] != MID_MAX
            and row[2] != MOID_MAX
            and row[3] != CAP_MAX
            and not (with_acq and row[4] == ACQ_MAX)
        ]
        return kept
    return rows
