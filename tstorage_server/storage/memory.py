"""In-memory backend: fast, nothing survives the process.

Records are grouped in *series* by ``(cid, mid, moid)``. A series maps ``(cap, acq)`` to the
payload (upsert is a dict assignment) and keeps its keys in a list that is appended to and
sorted lazily, on the next read after an out-of-order insert: ingest is mostly in time order,
so appends are the common case and Timsort handles the rest in near-linear time.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import AsyncGenerator

from tstorage_client.protocol.server import PutRow, encode_records
from tstorage_client.record import Key
from tstorage_server.acq import AcqClock
from tstorage_server.storage.base import NO_ACQ_RANGE, PutTransaction, Storage

__all__ = ["MemoryStorage"]

SeriesId = tuple[int, int, int]
Stamp = tuple[int, int]  # cap, acq

READ_CHUNK_ROWS = 8192
"""Records encoded per chunk of a GET: bounds what one read step holds and how long it runs."""


class _Series:
    """The records of one (cid, mid, moid)."""

    __slots__ = ("payloads", "sorted", "stamps")

    def __init__(self) -> None:
        self.payloads: dict[Stamp, bytes] = {}
        self.stamps: list[Stamp] = []
        self.sorted = True

    def put(self, stamp: Stamp, payload: bytes) -> None:
        payloads = self.payloads
        if stamp not in payloads:
            stamps = self.stamps
            if stamps and stamp < stamps[-1]:
                self.sorted = False
            stamps.append(stamp)
        payloads[stamp] = payload

    def ordered(self) -> list[Stamp]:
        if not self.sorted:
            self.stamps.sort()
            self.sorted = True
        return self.stamps


class MemoryStorage(Storage):
    """Records in process memory; all work runs on the event loop (no blocking calls)."""

    def __init__(self) -> None:
        self.clock = AcqClock()
        self._series: dict[SeriesId, _Series] = {}

    def begin_put(self, with_acq: bool) -> PutTransaction:
        return _MemoryPut(self, with_acq)

    def apply(self, batches: list[tuple[int, list[PutRow]]], with_acq: bool) -> tuple[int, int]:
        """Store the batches at once (synchronously: nothing can observe a half-applied PUT)."""
        count = sum(len(rows) for _, rows in batches)
        if count == 0:
            return NO_ACQ_RANGE
        acq = -1 if with_acq else self.clock.assign(count)
        first = acq
        all_series = self._series
        for cid, rows in batches:
            for mid, moid, cap, row_acq, payload in rows:
                series_id = (cid, mid, moid)
                series = all_series.get(series_id)
                if series is None:
                    series = all_series[series_id] = _Series()
                if with_acq:
                    series.put((cap, row_acq), payload)
                else:
                    series.put((cap, acq), payload)
                    acq += 1
        return NO_ACQ_RANGE if with_acq else (first, acq - 1)

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
        rows: list[tuple[int, int, int, int, int, bytes]] = []
        for sid in ids:
            cid, mid, moid = sid
            series = self._series[sid]
            resume: Stamp = (cap_lo, acq_lo)
            inclusive = True
            while True:
                # Re-seek after every chunk: PUTs between chunks may insert into this series.
                stamps = series.ordered()
                payloads = series.payloads
                pos = bisect_left(stamps, resume) if inclusive else bisect_right(stamps, resume)
                end = len(stamps)
                while pos < end and len(rows) < READ_CHUNK_ROWS:
                    stamp = stamps[pos]
                    pos += 1
                    cap, acq = stamp
                    if cap >= cap_hi:
                        pos = end
                        break
                    if acq_lo <= acq < acq_hi:
                        rows.append((cid, mid, moid, cap, acq, payloads[stamp]))
                if len(rows) < READ_CHUNK_ROWS:
                    break  # this series is exhausted; keep filling the chunk from the next one
                resume, inclusive = stamps[pos - 1], False
                yield encode_records(rows)
                rows = []
                if pos >= end:
                    break
        if rows:
            yield encode_records(rows)

    async def close(self) -> None:
        self._series.clear()


class _MemoryPut(PutTransaction):
    """Stages the request's rows and applies them in one synchronous step on commit."""

    def __init__(self, storage: MemoryStorage, with_acq: bool) -> None:
        self._storage = storage
        self._with_acq = with_acq
        self._batches: list[tuple[int, list[PutRow]]] = []

    async def add(self, cid: int, rows: list[PutRow]) -> None:
        if rows:
            self._batches.append((cid, rows))

    async def commit(self) -> tuple[int, int]:
        batches, self._batches = self._batches, []
        return self._storage.apply(batches, self._with_acq)

    async def rollback(self) -> None:
        self._batches = []
