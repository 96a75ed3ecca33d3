"""In-memory backend: fast, nothing survives the process.

Records are grouped in *series* by ``(cid, mid, moid)``. A series holds three parallel lists,
caps, acqs and the records' ready-to-send GET frames, kept sorted by ``(cap, acq)``. Ingest
is mostly in time order, so the common write is three appends; an out-of-order or repeated
key only marks the series dirty, and the next read re-sorts it once (deduplicating keys, last
write wins). A GET bisects the caps and joins frame slices: nothing is built per record.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import AsyncGenerator
from itertools import count
from operator import itemgetter
from typing import Any

from tstorage_client.protocol.server import (
    PUT_TO_GET_N,
    PUTA_TO_GET_N,
    RECORD_HEAD,
    PutaRow,
    PutRow,
)
from tstorage_client.record import ACQ_MAX, ACQ_MIN, Key
from tstorage_server.acq import AcqClock
from tstorage_server.storage.base import NO_ACQ_RANGE, PutTransaction, Storage

__all__ = ["MemoryStorage"]

SeriesId = tuple[int, int, int]

READ_CHUNK_ROWS = 8192
"""Records per chunk of a GET: bounds what one read step holds and how long it runs."""

_frame_head = RECORD_HEAD.pack
_first, _second = itemgetter(0), itemgetter(1)


class _Series:
    """The records of one (cid, mid, moid)."""

    __slots__ = ("acqs", "caps", "dirty", "frames")

    def __init__(self) -> None:
        self.caps: list[int] = []
        self.acqs: list[int] = []
        self.frames: list[bytes] = []
        self.dirty = False

    def views(self) -> tuple[list[int], list[int], list[bytes]]:
        """Sorted caps, acqs and frames; the lists are replaced on re-sort, never reordered."""
        if self.dirty:
            # dict() keeps the last frame of a repeated key: upsert, last write wins.
            latest = dict(zip(zip(self.caps, self.acqs, strict=True), self.frames, strict=True))
            items = sorted(latest.items(), key=_first)
            keys = list(map(_first, items))
            self.caps = list(map(_first, keys))
            self.acqs = list(map(_second, keys))
            self.frames = list(map(_second, items))
            self.dirty = False
        return self.caps, self.acqs, self.frames


class MemoryStorage(Storage):
    """Records in process memory; all work runs on the event loop (no blocking calls)."""

    def __init__(self) -> None:
        self.clock = AcqClock()
        self._series: dict[SeriesId, _Series] = {}
        # Bounds of every acq stored: a GET whose acq range covers them needs no acq filter.
        self._acq_lo = ACQ_MAX
        self._acq_hi = ACQ_MIN

    def begin_put(self, with_acq: bool) -> PutTransaction:
        return _MemoryPut(self, with_acq)

    def _series_of(self, cid: int, mid: int, moid: int) -> _Series:
        series = self._series.get((cid, mid, moid))
        if series is None:
            series = self._series[(cid, mid, moid)] = _Series()
        return series

    def store_put(self, cid: int, rows: list[PutRow], first_acq: int) -> None:
        """Store PUT rows of one cid with the acqs ``first_acq, first_acq + 1, ...``."""
        self._acq_lo = min(self._acq_lo, first_acq)
        self._acq_hi = max(self._acq_hi, first_acq + len(rows) - 1)
        get = self._series.get
        head = _frame_head
        for (n, mid, moid, cap, payload), acq in zip(rows, count(first_acq), strict=False):
            series = get((cid, mid, moid)) or self._series_of(cid, mid, moid)
            caps = series.caps
            if caps and (cap < caps[-1] or (cap == caps[-1] and acq <= series.acqs[-1])):
                series.dirty = True
            caps.append(cap)
            series.acqs.append(acq)
            series.frames.append(head(n + PUT_TO_GET_N, cid, mid, moid, cap, acq) + payload)

    def store_puta(self, cid: int, rows: list[PutaRow]) -> None:
        """Store PUTA rows with the client's acqs (upsert: a repeated key replaces the record)."""
        row_acqs = [row[4] for row in rows]
        self._acq_lo = min(self._acq_lo, min(row_acqs))
        self._acq_hi = max(self._acq_hi, max(row_acqs))
        get = self._series.get
        head = _frame_head
        for n, mid, moid, cap, acq, payload in rows:
            series = get((cid, mid, moid)) or self._series_of(cid, mid, moid)
            caps = series.caps
            if caps and (cap < caps[-1] or (cap == caps[-1] and acq <= series.acqs[-1])):
                series.dirty = True
            caps.append(cap)
            series.acqs.append(acq)
            series.frames.append(head(n + PUTA_TO_GET_N, cid, mid, moid, cap, acq) + payload)

    async def read(self, key_min: Key, key_max: Key) -> AsyncGenerator[bytes, None]:
        cid_lo, mid_lo, moid_lo, cap_lo, acq_lo = key_min
        cid_hi, mid_hi, moid_hi, cap_hi, acq_hi = key_max
        # A snapshot of the matching series ids: PUTs may add series while the GET streams.
        ids = sorted(
            sid
            for sid in self._series
            if cid_lo <= sid[0] < cid_hi
            and mid_lo <= sid[1] < mid_hi
            and moid_lo <= sid[2] < moid_hi
        )
        chunk: list[bytes] = []
        scanned = 0  # records looked at since the last yield: bounds the work of one step
        for sid in ids:
            # Later PUTs only append to these lists (a re-sort replaces them), so the
            # positions below stay valid across the yields.
            caps, acqs, frames = self._series[sid].views()
            # Decided per series, with its views: a PUT during the GET may widen the bounds.
            acq_filter = not (acq_lo <= self._acq_lo and self._acq_hi < acq_hi)
            lo = bisect_left(caps, cap_lo)
            hi = bisect_left(caps, cap_hi)
            while lo < hi:
                take = min(hi, lo + READ_CHUNK_ROWS - scanned)
                if acq_filter:
                    chunk += [frames[i] for i in range(lo, take) if acq_lo <= acqs[i] < acq_hi]
                else:
                    chunk += frames[lo:take]
                scanned += take - lo
                lo = take
                if scanned >= READ_CHUNK_ROWS:
                    yield b"".join(chunk)
                    chunk = []
                    scanned = 0
        if chunk:
            yield b"".join(chunk)

    async def close(self) -> None:
        self._series.clear()


class _MemoryPut(PutTransaction):
    """Stages the request's rows; on commit stores them batch by batch.

    Nothing is stored before the whole request has arrived (a failed PUT leaves no trace).
    The commit yields to the event loop between batches (at most ``MAX_ROWS_PER_EVENT`` rows
    each), so a huge PUT does not stall other connections; meanwhile its first acq is held,
    so acq0 stays below the PUT until every record of it is visible.
    """

    def __init__(self, storage: MemoryStorage, with_acq: bool) -> None:
        self._storage = storage
        self._with_acq = with_acq
        self._batches: list[tuple[int, Any]] = []

    async def add(self, cid: int, rows: list[PutRow] | list[PutaRow]) -> None:
        if rows:
            self._batches.append((cid, rows))

    async def commit(self) -> tuple[int, int]:
        batches, self._batches = self._batches, []
        storage = self._storage
        if self._with_acq:
            for cid, rows in batches:
                storage.store_puta(cid, rows)
                await asyncio.sleep(0)
            return NO_ACQ_RANGE
        total = sum(len(rows) for _, rows in batches)
        if total == 0:
            return NO_ACQ_RANGE
        clock = storage.clock
        first = acq = clock.assign(total)
        clock.hold(first)
        try:
            for cid, rows in batches:
                storage.store_put(cid, rows, acq)
                acq += len(rows)
                await asyncio.sleep(0)
        finally:
            clock.release(first)
        return first, first + total - 1

    async def rollback(self) -> None:
        self._batches = []
