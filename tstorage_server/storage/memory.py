"""In-memory backend: fast, nothing survives the process.

Records are grouped in *series* by ``(cid, mid, moid)``. A series keeps columns, not objects:
``caps`` and ``acqs`` as ``array('q')`` and the records' ready-to-send GET frames laid end to
end in one ``bytearray`` (with fixed-size frames, record i starts at ``i * size``; otherwise an
``offsets`` array says where). Kept sorted by ``(cap, acq)``: ingest is mostly in time order,
so the common write extends the columns in bulk; an out-of-order or repeated key only marks
the series dirty, and the next read re-sorts it once (deduplicating keys, last write wins). A
GET bisects the caps and slices the frames: nothing is built per record.

A batch is turned into frames with strided copies (see :mod:`.frames`) and split into its
series at C speed when it is one series or cycles through its series in a fixed order (a
writer sending all its meters per tick); other batches are split record by record. Nothing
here allocates a Python object per stored record, so the cyclic GC has nothing to traverse.
"""

from __future__ import annotations

import asyncio
from array import array
from bisect import bisect_left
from collections.abc import AsyncGenerator
from typing import Any

from tstorage_client.record import ACQ_MAX, ACQ_MIN, Key
from tstorage_server.acq import AcqClock
from tstorage_server.rules import Rows
from tstorage_server.storage.base import NO_ACQ_RANGE, PutTransaction, Storage
from tstorage_server.storage.frames import (
    FrameBlock,
    is_increasing,
    merge_runs,
    series_blocks,
    sort_unique,
)

__all__ = ["MemoryStorage"]

SeriesId = tuple[int, int, int]

READ_CHUNK_ROWS = 8192
"""Records per chunk of a GET: bounds what one read step holds and how long it runs."""

_NO_IDS, _NO_MOIDS = array("q"), array("i")

COMMIT_STEP_ROWS = 32768
"""Records stored per step of a commit, between yields to the event loop: bulk work costs a
fixed overhead per series and step, so steps are longer than a parsed batch (32768: about as
long in time as the 8192-record steps of per-record storing were; 16384 cost ~12 % more
instructions per record, 65536 saved ~10 % but doubled the stall other connections see)."""


class _Series:
    """The records of one (cid, mid, moid) as columns.

    ``size`` is the frame size while every frame has it (then ``offsets`` is empty); 0 once
    sizes differ, and ``offsets`` holds ``len(caps) + 1`` frame starts.
    """

    __slots__ = ("acqs", "caps", "data", "dirty", "offsets", "size")

    def __init__(self) -> None:
        self.caps: array[int] = array("q")
        self.acqs: array[int] = array("q")
        self.data = bytearray()
        self.size = 0
        self.offsets: array[int] = array("q")
        self.dirty = False

    def extend(self, block: FrameBlock) -> None:
        """Append a block of this series' records (its columns extend in place)."""
        caps, acqs = block.caps, block.acqs
        if not caps:
            return
        own = self.caps
        # Still sorted only if the block starts after the last record and increases itself.
        after = not own or caps[0] > own[-1] or (caps[0] == own[-1] and acqs[0] > self.acqs[-1])
        if not (after and (self.dirty or is_increasing(caps, acqs))):
            self.dirty = True
        if not own and not self.offsets:
            self.size = block.size
            if not block.size:
                self.offsets = array("q", [0])
        if self.size and block.size != self.size:
            # Frames of another size: from now on the series records where each one starts.
            self.offsets = array("q", range(0, len(self.data) + 1, self.size))
            self.size = 0
        if not self.size:
            base = len(self.data)
            if block.size:
                new = range(base + block.size, base + len(block.frames) + 1, block.size)
                self.offsets.extend(array("q", new))
            else:
                assert block.offsets is not None
                self.offsets.extend(array("q", [base + o for o in block.offsets[1:]]))
        own.extend(caps)
        self.acqs.extend(acqs)
        self.data += block.frames

    def views(self) -> tuple[array[int], array[int], bytearray, int, array[int]]:
        """Sorted caps, acqs, frame bytes, size and offsets.

        The objects are replaced on re-sort, never reordered: a reader holding them keeps
        valid positions while later writes append.
        """
        if self.dirty:
            self._sort()
        return self.caps, self.acqs, self.data, self.size, self.offsets

    def _sort(self) -> None:
        offsets = None if self.size else self.offsets
        block = FrameBlock(
            0, self.data, self.size, offsets, _NO_IDS, _NO_MOIDS, self.caps, self.acqs
        )
        block = sort_unique(block)
        if not self.size:
            self.offsets = block.offsets or array("q", range(0, len(block.frames) + 1, block.size))
        self.caps, self.acqs = block.caps, block.acqs
        assert isinstance(block.frames, bytearray)
        self.data = block.frames
        self.dirty = False


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

    def store(self, cid: int, rows: Rows, first_acq: int | None) -> None:
        """Store a batch of ``cid``: PUT rows with the acqs ``first_acq, first_acq + 1, ...``,
        or PUTA rows (``first_acq`` None) with their own acqs (upsert: a repeated key wins)."""
        if not rows:
            return
        blocks = series_blocks(cid, rows, first_acq)
        self._note_acqs(first_acq, len(rows), [block for _, _, block in blocks])
        for mid, moid, block in blocks:
            self._series_of(cid, mid, moid).extend(block)

    def _note_acqs(self, first_acq: int | None, count: int, blocks: list[FrameBlock]) -> None:
        """Widen the bounds of the acqs stored by those of a batch."""
        if first_acq is not None:
            low, high = first_acq, first_acq + count - 1
        else:
            low = min(min(block.acqs) for block in blocks)
            high = max(max(block.acqs) for block in blocks)
        self._acq_lo = min(self._acq_lo, low)
        self._acq_hi = max(self._acq_hi, high)

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
        chunk: list[Any] = []
        scanned = 0  # records looked at since the last yield: bounds the work of one step
        for sid in ids:
            # Later PUTs only append to these columns (a re-sort replaces them), so the
            # positions below stay valid across the yields.
            caps, acqs, data, size, offsets = self._series[sid].views()
            # Decided per series, with its views: a PUT during the GET may widen the bounds.
            acq_filter = not (acq_lo <= self._acq_lo and self._acq_hi < acq_hi)
            lo = bisect_left(caps, cap_lo)
            hi = bisect_left(caps, cap_hi)
            while lo < hi:
                take = min(hi, lo + READ_CHUNK_ROWS - scanned)
                if acq_filter:
                    for i in range(lo, take):
                        if acq_lo <= acqs[i] < acq_hi:
                            if size:
                                chunk.append(data[i * size : i * size + size])
                            else:
                                chunk.append(data[offsets[i] : offsets[i + 1]])
                elif size:
                    chunk.append(data[lo * size : take * size])
                else:
                    chunk.append(data[offsets[lo] : offsets[take]])
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
    """Stages the request's rows; on commit stores them step by step.

    Nothing is stored before the whole request has arrived (a failed PUT leaves no trace).
    The commit yields to the event loop between steps (at most ``COMMIT_STEP_ROWS`` records of
    bulk work, or one parsed batch), so a huge PUT does not stall other connections;
    meanwhile its first acq is held, so acq0 stays below the PUT until every record of it is
    visible.
    """

    def __init__(self, storage: MemoryStorage, with_acq: bool) -> None:
        self._storage = storage
        self._with_acq = with_acq
        self._batches: list[tuple[int, Rows]] = []

    async def add(self, cid: int, rows: Rows) -> None:
        if rows:
            self._batches.append((cid, rows))

    async def commit(self) -> tuple[int, int]:
        batches = merge_runs(self._batches, COMMIT_STEP_ROWS)
        self._batches = []
        storage = self._storage
        if self._with_acq:
            for cid, rows in batches:
                storage.store(cid, rows, None)
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
                storage.store(cid, rows, acq)
                acq += len(rows)
                await asyncio.sleep(0)
        finally:
            clock.release(first)
        return first, first + total - 1

    async def rollback(self) -> None:
        self._batches = []
