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
from itertools import accumulate
from operator import lt
from typing import Any

from tstorage_client.protocol.server import RecordRun
from tstorage_client.record import ACQ_MAX, ACQ_MIN, Key
from tstorage_server.acq import AcqClock
from tstorage_server.rules import Rows
from tstorage_server.storage.base import NO_ACQ_RANGE, PutTransaction, Storage
from tstorage_server.storage.frames import (
    FrameBlock,
    build_block,
    progression,
    rows_block,
    series_period,
    wire_columns,
)

__all__ = ["MemoryStorage"]

SeriesId = tuple[int, int, int]

READ_CHUNK_ROWS = 8192
"""Records per chunk of a GET: bounds what one read step holds and how long it runs."""

COMMIT_STEP_ROWS = 32768
"""Records stored per step of a commit, between yields to the event loop: bulk work costs a
fixed overhead per series and step, so steps are longer than a parsed batch (32768: about as
long in time as the 8192-record steps of per-record storing were; 16384 cost ~12 % more
instructions per record, 65536 saved ~10 % but doubled the stall other connections see)."""


def _increasing(caps: array[int], acqs: array[int]) -> bool:
    """True when the ``(cap, acq)`` pairs are strictly increasing."""
    cap_list = caps.tolist()
    if all(map(lt, cap_list, cap_list[1:])):
        return True
    keys = list(zip(cap_list, acqs.tolist(), strict=True))
    return all(map(lt, keys, keys[1:]))


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
        if not (after and (self.dirty or _increasing(caps, acqs))):
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
        caps, acqs = self.caps.tolist(), self.acqs.tolist()
        keys = list(zip(caps, acqs, strict=True))
        # The last index of a repeated key wins: upsert, last write wins.
        latest = dict(zip(keys, range(len(keys)), strict=True))
        order = sorted(latest.values(), key=keys.__getitem__)
        with memoryview(self.data) as data:
            if self.size:
                size = self.size
                parts = [data[i * size : i * size + size] for i in order]
            else:
                offsets = self.offsets
                parts = [data[offsets[i] : offsets[i + 1]] for i in order]
            frames = bytearray(b"".join(parts))
            if not self.size:
                self.offsets = array("q", accumulate(map(len, parts), initial=0))
            del parts
        self.caps = array("q", [caps[i] for i in order])
        self.acqs = array("q", [acqs[i] for i in order])
        self.data = frames
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
        if not isinstance(rows, RecordRun):
            self._store_rows(cid, rows, first_acq)
            return
        mids, moids = wire_columns(rows)
        period = series_period(mids, moids)
        if not period:
            self._store_mixed(build_block(cid, rows, first_acq), first_acq)
            return
        put_acqs = None if first_acq is None else progression(first_acq, len(rows))
        blocks = [
            build_block(cid, rows, first_acq, start, period, put_acqs=put_acqs, with_ids=False)
            for start in range(period)
        ]
        self._note_acqs(first_acq, len(rows), blocks)
        for start, block in enumerate(blocks):
            self._series_of(cid, mids[start], moids[start]).extend(block)

    def _store_rows(self, cid: int, rows: list[Any], first_acq: int | None) -> None:
        """Decoded rows (mixed sizes): grouped by series first, then packed per series."""
        groups: dict[tuple[int, int], tuple[list[Any], list[int]]] = {}
        if first_acq is None:
            for row in rows:
                group = groups.get((row[1], row[2]))
                if group is None:
                    group = groups[(row[1], row[2])] = ([], [])
                group[0].append(row)
        else:
            for row, acq in zip(rows, range(first_acq, first_acq + len(rows)), strict=True):
                group = groups.get((row[1], row[2]))
                if group is None:
                    group = groups[(row[1], row[2])] = ([], [])
                group[0].append(row)
                group[1].append(acq)
        blocks = {
            sid: rows_block(cid, part, None if first_acq is None else array("q", acqs))
            for sid, (part, acqs) in groups.items()
        }
        self._note_acqs(first_acq, len(rows), list(blocks.values()))
        for (mid, moid), block in blocks.items():
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

    def _store_mixed(self, block: FrameBlock, first_acq: int | None) -> None:
        """Split a block of fixed-size frames of several series in no fixed order."""
        self._note_acqs(first_acq, len(block), [block])
        groups: dict[tuple[int, int], list[int]] = {}
        for index, sid in enumerate(zip(block.mids, block.moids, strict=True)):
            group = groups.get(sid)
            if group is None:
                groups[sid] = [index]
            else:
                group.append(index)
        if len(groups) == 1:
            ((mid, moid),) = groups
            self._series_of(block.cid, mid, moid).extend(block)
            return
        size, caps, acqs = block.size, block.caps, block.acqs
        assert size, "a record run has frames of one size"
        with memoryview(block.frames) as view:
            for (mid, moid), indexes in groups.items():
                parts = [view[i * size : i * size + size] for i in indexes]
                part = FrameBlock(
                    block.cid,
                    b"".join(parts),
                    size,
                    None,
                    array("q"),
                    array("i"),
                    array("q", [caps[i] for i in indexes]),
                    array("q", [acqs[i] for i in indexes]),
                )
                del parts
                self._series_of(block.cid, mid, moid).extend(part)

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


def merge_runs(batches: list[tuple[int, Rows]], limit: int) -> list[tuple[int, Rows]]:
    """Join consecutive runs of one cid and record size into runs of up to ``limit`` records.

    The parser hands a long batch out in read-sized pieces; bulk conversion is cheaper per
    record the longer the run. Row lists and runs of other sizes are kept as they are.
    """
    merged: list[tuple[int, Rows]] = []
    pending: list[RecordRun] = []
    pending_cid = 0

    def flush() -> None:
        if len(pending) == 1:
            merged.append((pending_cid, pending[0]))
        elif pending:
            first = pending[0]
            data = b"".join([run.data for run in pending])
            merged.append((pending_cid, RecordRun(data, first.n, first.with_acq)))
        pending.clear()

    for cid, rows in batches:
        if isinstance(rows, RecordRun):
            if pending and (
                cid != pending_cid
                or rows.n != pending[0].n
                or sum(run.count for run in pending) + rows.count > limit
            ):
                flush()
            pending.append(rows)
            pending_cid = cid
        else:
            flush()
            merged.append((cid, rows))
    flush()
    return merged


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
