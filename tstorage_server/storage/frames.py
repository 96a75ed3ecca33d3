"""Records in GET frame form, built in bulk: what both storage backends keep per record.

A GET answers records as frames (``int32 n``, the 32-byte key, the payload). The backends
store every record as its ready frame, so a GET only slices and joins bytes. This module turns
the rows of one PUT / PUTA batch into a :class:`FrameBlock`: the frames laid end to end plus
the key columns a backend indexes by (``array('q')`` / ``array('i')``, no Python object per
record).

A :class:`RecordRun` (records of one size, still in wire form) is converted with strided
``memoryview`` copies: one C-level copy per 4-byte column of the frame, each over all the
records, instead of one ``struct.pack`` per record. Decoded rows (mixed sizes) and runs
with large payloads (where per-column copies would cost more than per-record packing) take
the per-record path.
"""

from __future__ import annotations

from array import array
from itertools import accumulate, pairwise
from operator import itemgetter, lt
from typing import Any, Literal

from tstorage_client.protocol.server import RECORD_HEAD, RecordRun
from tstorage_server.rules import Rows

__all__ = [
    "STRIDED_MAX_UNITS",
    "FrameBlock",
    "build_block",
    "concat",
    "cut",
    "is_increasing",
    "joined_block",
    "merge_runs",
    "normalized",
    "pick",
    "progression",
    "rows_block",
    "series_blocks",
    "series_period",
    "sort_unique",
    "wire_columns",
]

STRIDED_MAX_UNITS = 64
"""Largest frame, in copy units (4 bytes, or 1 when sizes are not multiples of 4), built by
strided copies; larger frames are packed record by record (fewer, longer records)."""

_HEAD_SIZE = RECORD_HEAD.size  # 36: n, cid, mid, moid, cap, acq
_GET_N = _HEAD_SIZE - 4  # a frame's n is this plus the payload size
# Byte offsets in a GET frame and in a wire record (after n: mid, moid, cap[, acq], payload).
_F_MID, _F_MOID, _F_CAP, _F_ACQ = 8, 16, 20, 28
_W_MID, _W_MOID, _W_CAP, _W_ACQ = 4, 12, 16, 24

_mid, _moid, _cap, _puta_acq = itemgetter(1), itemgetter(2), itemgetter(3), itemgetter(4)
_first = itemgetter(0)
_LOW_WORDS = array("H", range(0x10000))  # every 16-bit value, for progression()


def progression(first: int, length: int) -> array[int]:
    """``array('q', range(first, first + length))``, built without an int object per item.

    Within a span where the low 16 bits do not wrap, the items share their upper 48 bits:
    the span is one repeated 8-byte value whose low 16-bit words are then copied from a
    table of all 16-bit values (C-level copies; ``array(range)`` converts every int).
    """
    out = array("q")
    with memoryview(_LOW_WORDS) as low_words:
        while length > 0:
            low = first & 0xFFFF
            take = min(length, 0x10000 - low)
            span = array("q", [first - low]) * take
            with memoryview(span) as typed, typed.cast("B") as raw, raw.cast("H") as words:
                words[0::4] = low_words[low : low + take]
            out += span
            first += take
            length -= take
    return out


class FrameBlock:
    """Records of one cid as GET frames laid end to end, with their key columns.

    ``size`` is the frame size when all frames have it; otherwise 0, and ``offsets`` holds
    ``count + 1`` start offsets (the last one is ``len(frames)``).
    """

    __slots__ = ("acqs", "caps", "cid", "frames", "mids", "moids", "offsets", "size")

    def __init__(
        self,
        cid: int,
        frames: bytes | bytearray,
        size: int,
        offsets: array[int] | None,
        mids: array[int],
        moids: array[int],
        caps: array[int],
        acqs: array[int],
    ) -> None:
        self.cid = cid
        self.frames = frames
        self.size = size
        self.offsets = offsets
        self.mids = mids
        self.moids = moids
        self.caps = caps
        self.acqs = acqs

    def __len__(self) -> int:
        return len(self.caps)

    def frame_list(self) -> list[bytearray]:
        """Each frame as its own object, for SQL rows.

        ``bytearray``, not ``bytes``: Python's sqlite3 binds a bytearray directly, while a
        bytes parameter first goes through the adaptation protocol (two failed attribute
        lookups per value), about a fifth of an insert's cost.
        """
        frames = self.frames if isinstance(self.frames, bytearray) else bytearray(self.frames)
        if self.size:
            size = self.size
            return [frames[i : i + size] for i in range(0, len(frames), size)]
        assert self.offsets is not None
        return [frames[a:b] for a, b in pairwise(self.offsets)]


Unit = Literal["i", "B"]


def _unit(n: int) -> tuple[int, Unit]:
    """Copy unit (bytes) and its memoryview format for records of wire size ``n + 4``."""
    return (4, "i") if n % 4 == 0 else (1, "B")


def _strided(rows: Rows) -> bool:
    if not isinstance(rows, RecordRun) or rows.count == 0:
        return False
    unit, _ = _unit(rows.n)
    return (rows.payload_size + _HEAD_SIZE) // unit <= STRIDED_MAX_UNITS


def wire_columns(run: RecordRun) -> tuple[array[int], array[int]]:
    """The mid and moid of every record of ``run`` (strided copies, no per-record objects)."""
    unit, fmt = _unit(run.n)
    with memoryview(run.data) as raw, raw.cast(fmt) as wire:
        stride = (run.n + 4) // unit
        mids = _column(wire, _W_MID // unit, stride, run.count, "q", 8, unit, fmt)
        moids = _column(wire, _W_MOID // unit, stride, run.count, "i", 4, unit, fmt)
    return mids, moids


def _column(
    source: memoryview,
    start: int,
    stride: int,
    length: int,
    typecode: str,
    width: int,
    unit: int,
    fmt: Unit,
) -> array[int]:
    """An array of ``length`` items of ``width`` bytes, item i from ``source[start + i*stride]``."""
    column = array(typecode, bytes(width * length))
    with memoryview(column) as typed, typed.cast("B") as raw, raw.cast(fmt) as units:
        per = width // unit
        for k in range(per):
            units[k::per] = source[start + k :: stride]
    return column


def build_block(
    cid: int,
    rows: Rows,
    first_acq: int | None,
    start: int = 0,
    step: int = 1,
    *,
    put_acqs: array[int] | None = None,
    with_ids: bool = True,
) -> FrameBlock:
    """Frames and key columns of records ``start, start + step, ...`` of a batch of ``cid``.

    ``first_acq`` is the acq of the batch's first record (PUT: record i gets ``first_acq +
    i``; ``put_acqs`` may pass those acqs of the whole batch, already built); None for PUTA
    rows, which carry their acq. Without ``with_ids`` the mid and moid columns of a run stay
    empty (the caller knows the series).
    """
    if _strided(rows):
        assert isinstance(rows, RecordRun)
        return _from_run(cid, rows, first_acq, start, step, put_acqs, with_ids)
    listed: list[Any] = list(rows)
    acqs = None
    if first_acq is not None:
        acqs = put_acqs if put_acqs is not None else progression(first_acq, len(listed))
        acqs = acqs[start::step]
    return rows_block(cid, listed[start::step], acqs)


def _from_run(
    cid: int,
    run: RecordRun,
    first_acq: int | None,
    start: int,
    step: int,
    put_acqs: array[int] | None,
    with_ids: bool,
) -> FrameBlock:
    n = run.n
    payload = run.payload_size
    wire_size, size = n + 4, _HEAD_SIZE + payload
    length = len(range(start, run.count, step))
    unit, fmt = _unit(n)
    frames = bytearray(
        (RECORD_HEAD.pack(_GET_N + payload, cid, 0, 0, 0, 0) + bytes(payload)) * length
    )
    fstride, wstride = size // unit, step * wire_size // unit
    wbase = start * wire_size // unit
    with (
        memoryview(frames) as raw_frames,
        raw_frames.cast(fmt) as fv,
        memoryview(run.data) as raw_wire,
        raw_wire.cast(fmt) as wv,
    ):

        def copy(dst: int, src: memoryview, src_start: int, src_stride: int, nbytes: int) -> None:
            for k in range(nbytes // unit):
                fv[dst // unit + k :: fstride] = src[src_start + k :: src_stride]

        if run.with_acq:
            copy(_F_MID, wv, wbase + _W_MID // unit, wstride, 28)  # mid, moid, cap, acq
            copy(_HEAD_SIZE, wv, wbase + (_W_ACQ + 8) // unit, wstride, payload)
            acqs = _column(fv, _F_ACQ // unit, fstride, length, "q", 8, unit, fmt)
        else:
            assert first_acq is not None
            if put_acqs is None:
                acqs = progression(first_acq, len(run))[start::step]
            else:
                acqs = put_acqs[start::step]
            copy(_F_MID, wv, wbase + _W_MID // unit, wstride, 20)  # mid, moid, cap
            copy(_HEAD_SIZE, wv, wbase + _W_ACQ // unit, wstride, payload)
            with memoryview(acqs) as typed, typed.cast("B") as raw_acqs, raw_acqs.cast(fmt) as av:
                copy(_F_ACQ, av, 0, 8 // unit, 8)
        if with_ids:
            mids = _column(fv, _F_MID // unit, fstride, length, "q", 8, unit, fmt)
            moids = _column(fv, _F_MOID // unit, fstride, length, "i", 4, unit, fmt)
        else:
            mids, moids = array("q"), array("i")
        caps = _column(fv, _F_CAP // unit, fstride, length, "q", 8, unit, fmt)
    return FrameBlock(cid, frames, size, None, mids, moids, caps, acqs)


def rows_block(cid: int, rows: list[Any], acqs: array[int] | None) -> FrameBlock:
    """Per-record packing of decoded rows: PUT rows with their ``acqs``, or PUTA rows (None)."""
    head = RECORD_HEAD.pack
    extra = _HEAD_SIZE - 4
    if acqs is None:
        acqs = array("q", map(_puta_acq, rows))
        parts = [head(len(p) + extra, cid, m, o, c, a) + p for _, m, o, c, a, p in rows]
    else:
        parts = [
            head(len(p) + extra, cid, m, o, c, a) + p
            for (_, m, o, c, p), a in zip(rows, acqs, strict=True)
        ]
    return joined_block(
        cid,
        parts,
        array("q", map(_cap, rows)),
        acqs,
        array("q", map(_mid, rows)),
        array("i", map(_moid, rows)),
    )


def joined_block(
    cid: int,
    parts: list[Any],
    caps: array[int],
    acqs: array[int],
    mids: array[int] | None = None,
    moids: array[int] | None = None,
) -> FrameBlock:
    """A block of the frames ``parts`` (bytes-like, one per record) with their key columns."""
    sizes = set(map(len, parts))
    size = sizes.pop() if len(sizes) == 1 else 0
    offsets = None if size else array("q", accumulate(map(len, parts), initial=0))
    return FrameBlock(
        cid,
        bytearray().join(parts),
        size,
        offsets,
        array("q") if mids is None else mids,
        array("i") if moids is None else moids,
        caps,
        acqs,
    )


def is_increasing(caps: array[int], acqs: array[int]) -> bool:
    """True when the ``(cap, acq)`` pairs are strictly increasing."""
    cap_list = caps.tolist()
    if all(map(lt, cap_list, cap_list[1:])):
        return True
    keys = list(zip(cap_list, acqs.tolist(), strict=True))
    return all(map(lt, keys, keys[1:]))


def frame_range(block: FrameBlock, lo: int, hi: int) -> tuple[int, int]:
    """Byte range of the frames of records ``lo`` to ``hi`` (exclusive) of ``block``."""
    if block.size:
        return lo * block.size, hi * block.size
    assert block.offsets is not None
    return block.offsets[lo], block.offsets[hi]


def cut(block: FrameBlock, lo: int, hi: int) -> FrameBlock:
    """Records ``lo`` to ``hi`` (exclusive) of ``block`` (series columns left out)."""
    start, end = frame_range(block, lo, hi)
    offsets = None
    if not block.size:
        assert block.offsets is not None
        offsets = array("q", [o - start for o in block.offsets[lo : hi + 1]])
    return FrameBlock(
        block.cid,
        block.frames[start:end],
        block.size,
        offsets,
        array("q"),
        array("i"),
        block.caps[lo:hi],
        block.acqs[lo:hi],
    )


def pick(block: FrameBlock, indexes: list[int]) -> FrameBlock:
    """The records at ``indexes`` of ``block``, in that order (series columns left out)."""
    caps, acqs, size = block.caps, block.acqs, block.size
    with memoryview(block.frames) as data:
        if size:
            parts = [data[i * size : i * size + size] for i in indexes]
        else:
            offsets = block.offsets
            assert offsets is not None
            parts = [data[offsets[i] : offsets[i + 1]] for i in indexes]
        out = joined_block(
            block.cid,
            parts,
            array("q", [caps[i] for i in indexes]),
            array("q", [acqs[i] for i in indexes]),
        )
        del parts
    if size and not out.size:  # no records: keep the size
        out.size, out.offsets = size, None
    return out


def concat(blocks: list[FrameBlock]) -> FrameBlock:
    """The records of ``blocks`` (of one cid) one block after the other."""
    caps, acqs = array("q"), array("q")
    for block in blocks:
        caps += block.caps
        acqs += block.acqs
    sizes = {block.size for block in blocks}
    size = sizes.pop() if len(sizes) == 1 else 0
    offsets = None
    if not size:
        offsets = array("q", [0])
        for block in blocks:
            base = offsets[-1]
            if block.size:
                new = range(base + block.size, base + len(block.frames) + 1, block.size)
                offsets.extend(array("q", new))
            else:
                assert block.offsets is not None
                offsets.extend(array("q", [base + o for o in block.offsets[1:]]))
    frames = bytearray().join([block.frames for block in blocks])
    return FrameBlock(blocks[0].cid, frames, size, offsets, array("q"), array("i"), caps, acqs)


def sort_unique(block: FrameBlock) -> FrameBlock:
    """``block`` sorted by ``(cap, acq)``; of a repeated key only its last record is kept
    (upsert: last write wins)."""
    keys = list(zip(block.caps.tolist(), block.acqs.tolist(), strict=True))
    latest = dict(zip(keys, range(len(keys)), strict=True))
    return pick(block, sorted(latest.values(), key=keys.__getitem__))


def normalized(block: FrameBlock) -> FrameBlock:
    """``block`` itself when its keys strictly increase, else :func:`sort_unique` of it."""
    if is_increasing(block.caps, block.acqs):
        return block
    return sort_unique(block)


def series_blocks(cid: int, rows: Rows, first_acq: int | None) -> list[tuple[int, int, FrameBlock]]:
    """A batch of ``cid`` split into its series: ``(mid, moid, block)`` per series.

    PUT rows get the acqs ``first_acq, first_acq + 1, ...`` in batch order; PUTA rows
    (``first_acq`` None) keep theirs. A run of one series or of a fixed cycle of series is
    split with strided copies; other runs and decoded rows record by record.
    """
    if not rows:
        return []
    if not isinstance(rows, RecordRun):
        return _rows_series(cid, rows, first_acq)
    mids, moids = wire_columns(rows)
    period = series_period(mids, moids)
    if not period:
        return _mixed_series(build_block(cid, rows, first_acq))
    put_acqs = None if first_acq is None else progression(first_acq, len(rows))
    return [
        (
            mids[start],
            moids[start],
            build_block(cid, rows, first_acq, start, period, put_acqs=put_acqs, with_ids=False),
        )
        for start in range(period)
    ]


def _rows_series(
    cid: int, rows: list[Any], first_acq: int | None
) -> list[tuple[int, int, FrameBlock]]:
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
    return [
        (mid, moid, rows_block(cid, part, None if first_acq is None else array("q", acqs)))
        for (mid, moid), (part, acqs) in groups.items()
    ]


def _mixed_series(block: FrameBlock) -> list[tuple[int, int, FrameBlock]]:
    """Split a block of fixed-size frames of several series in no fixed order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for index, sid in enumerate(zip(block.mids, block.moids, strict=True)):
        group = groups.get(sid)
        if group is None:
            groups[sid] = [index]
        else:
            group.append(index)
    if len(groups) == 1:
        ((mid, moid),) = groups
        return [(mid, moid, block)]
    return [(mid, moid, pick(block, indexes)) for (mid, moid), indexes in groups.items()]


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


def series_period(mids: array[int], moids: array[int]) -> int:
    """The period of the batch's series pattern, or 0 when it has none worth using.

    ``p`` means: records ``i`` and ``i + p`` always belong to the same series and the first
    ``p`` records to ``p`` different ones, so series ``j`` holds records ``j, j + p, ...``
    (1: a single series; p > 1: a writer cycling through its meters). Checked with array
    slices compared at C speed.
    """
    total = len(mids)
    if total < 2:
        return 1 if total else 0
    first_mid, first_moid = mids[0], moids[0]
    period = 1
    while True:
        try:
            period = mids.index(first_mid, period)
        except ValueError:
            return 0
        if moids[period] == first_moid:
            break
        period += 1
    # Too few records per series: strided copies would cost more than the general path.
    if period * 4 > total:
        return 0
    if mids[period:] != mids[:-period] or moids[period:] != moids[:-period]:
        return 0
    if period > 1 and len(set(zip(mids[:period], moids[:period], strict=True))) != period:
        return 0
    return period
