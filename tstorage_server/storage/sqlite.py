"""SQLite backend: records on disk in one WAL-mode database file.

Durability: WAL with ``synchronous=NORMAL`` (the default). A commit appends the transaction to
the WAL with write() before it returns, so once a PUT is acknowledged its records are in the
OS page cache and survive the server process being killed (SIGKILL, OOM, crash); only a power
loss or kernel crash can drop the last transactions. ``synchronous="full"`` also fsyncs the
WAL on every commit and so survives power loss, at a cost per PUT.

Threads: sqlite3 calls block, so they never run on the event loop. One writer thread owns the
only writing connection (SQLite has one writer anyway) and runs every write in submission
order. Reads run on a small pool of reader threads with their own connections: WAL lets them
read a consistent snapshot while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import sqlite3
import sys
import threading
from array import array
from bisect import bisect_left
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any, Literal, TypeVar

from tstorage_client.protocol.server import RecordRun
from tstorage_client.record import Key
from tstorage_server.acq import AcqClock
from tstorage_server.gcpause import gc_paused
from tstorage_server.rules import Rows
from tstorage_server.storage.base import NO_ACQ_RANGE, PutTransaction, Storage
from tstorage_server.storage.frames import (
    FrameBlock,
    concat,
    cut,
    joined_block,
    merge_runs,
    normalized,
    pick,
    series_blocks,
    sort_unique,
)

__all__ = ["DB_FILENAME", "SqliteStorage", "block_queries"]

T = TypeVar("T")

DB_FILENAME = "tstorage.sqlite3"
LOCK_FILENAME = "tstorage.lock"

SCHEMA_VERSION = 2
# Schema 2 stores a series' run of records as ONE row, a *block*: the records' ready-to-send
# GET frames laid end to end, their caps and acqs as little-endian int64 arrays (and frame
# offsets when sizes differ), sorted by (cap, acq) with every key at most once. A large PUT is
# then a few B-tree inserts per series instead of one per record, and a GET slices and joins
# blobs. ``seq`` (the rowid) orders writes: where blocks of a series overlap, the record of
# the block with the higher seq wins (upsert: last write wins). Schema 1 (one row per record,
# table ``records``) is migrated on open.
_SCHEMA = (
    """CREATE TABLE blocks (
        seq INTEGER PRIMARY KEY,
        cid INTEGER NOT NULL, mid INTEGER NOT NULL, moid INTEGER NOT NULL,
        first_cap INTEGER NOT NULL, last_cap INTEGER NOT NULL,
        first_acq INTEGER NOT NULL, last_acq INTEGER NOT NULL,
        acq_lo INTEGER NOT NULL, acq_hi INTEGER NOT NULL,
        count INTEGER NOT NULL, size INTEGER NOT NULL,
        caps BLOB NOT NULL, acqs BLOB NOT NULL, offsets BLOB, frames BLOB NOT NULL
    )""",
    # GETs: the blocks of a series in cap order, filtered on last_cap within the index.
    "CREATE INDEX blocks_by_cap ON blocks (cid, mid, moid, first_cap, last_cap)",
    # Writes: the latest block of a series (its entries are ordered by seq).
    "CREATE INDEX blocks_by_series ON blocks (cid, mid, moid)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_BLOCK_COLUMNS = (
    "cid, mid, moid, first_cap, last_cap, first_acq, last_acq, acq_lo, acq_hi, count, size,"
    " caps, acqs, offsets, frames"
)
_INSERT_BLOCK = f"INSERT INTO blocks ({_BLOCK_COLUMNS}) VALUES ({', '.join('?' * 15)})"  # noqa: S608 - constant column names
_UPDATE_BLOCK = f"UPDATE blocks SET ({_BLOCK_COLUMNS}) = ({', '.join('?' * 15)}) WHERE seq = ?"  # noqa: S608 - constant column names
# The latest block of a series, with its contents only when it is small enough to merge into
# (a CASE is evaluated lazily: a large block's blobs are not read).
_LATEST_BLOCK = (
    "SELECT seq, count, length(frames), last_cap, last_acq, size,"
    " CASE WHEN count < ? THEN caps END, CASE WHEN count < ? THEN acqs END,"
    " CASE WHEN count < ? THEN offsets END, CASE WHEN count < ? THEN frames END"
    " FROM blocks INDEXED BY blocks_by_series"
    " WHERE cid = ? AND mid = ? AND moid = ? ORDER BY seq DESC LIMIT 1"
)
_SAVE_LAST_ACQ = "INSERT OR REPLACE INTO meta VALUES ('last_acq', ?)"
# The widest cap span of any block ever written: a GET from cap_lo only looks at blocks that
# start at cap_lo - max_span or later (so it seeks, instead of scanning a series' history).
_SAVE_MAX_SPAN = (
    "INSERT INTO meta VALUES ('max_span', ?)"
    " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)"
)
_META = "SELECT value FROM meta WHERE name = ?"
_ID_COLUMNS = ("cid", "mid", "moid")
_first = itemgetter(0)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

STAGE_LIMIT_BYTES = 16 * 1024 * 1024
"""A PUT up to this size is staged in memory and written in one step; a larger one streams
into an open write transaction (holding the writer) so memory stays bounded."""

WRITER_CACHE_KIB = 64 * 1024
"""Page cache of the writing connection (the readers keep SQLite's default)."""

READ_CHUNK_ROWS = 8192
"""Records read and sent per step of a GET."""

MAX_POINT_QUERIES = 1024
"""Upper bound on the sub-queries one box is split into (see :func:`block_queries`)."""

BLOCK_MAX_RECORDS = 16384
BLOCK_MAX_BYTES = 1024 * 1024
"""A block holds at most this many records and (unless one record is larger) frame bytes:
a GET of a short range inside a block reads all of its caps, and a merge rewrites it."""

MERGE_BELOW_RECORDS = 32
"""A write to a series whose latest block has fewer records is merged into that block
(rewriting it) instead of adding a block: small PUTs do not leave one tiny block each. Kept
small because every such write rewrites the whole block (256 cost 12 ms per PUT of 100
single-record series, 32 cost 7.6 ms, no merging 6.2 ms; one row per record was 2.2 ms)."""

_RUN_LIMIT = 1 << 20
"""Parser runs of one batch are joined up to this many records before they are split."""


def block_queries(
    key_min: Key, key_max: Key, max_span: int
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """SQL queries (with parameters) that together select the blocks that may hold records of
    the box, in series order and, within a series, by first cap.

    The ``blocks_by_cap`` index can seek on equalities followed by one range. So the leading
    identifier components (cid, then mid, then moid) whose ranges hold few values, while the
    product stays within ``MAX_POINT_QUERIES``, are enumerated as equalities, and the first
    cap (from ``cap_lo - max_span``) becomes the seek range.
    """
    fixed = 0
    count = 1
    while fixed < 3:
        width = key_max[fixed] - key_min[fixed]
        if count * width > MAX_POINT_QUERIES:
            break
        count *= width
        fixed += 1
    conditions = [f"{name} = ?" for name in _ID_COLUMNS[:fixed]]
    conditions += [f"{name} >= ? AND {name} < ?" for name in _ID_COLUMNS[fixed:]]
    conditions += [
        "first_cap >= ? AND first_cap < ? AND last_cap >= ?",
        "acq_hi >= ? AND acq_lo < ?",
    ]
    sql = (
        "SELECT seq, cid, mid, moid, first_cap, last_cap, first_acq, last_acq, acq_lo, acq_hi,"  # noqa: S608 - only column names are formatted in
        f" count, size FROM blocks INDEXED BY blocks_by_cap WHERE {' AND '.join(conditions)}"
        " ORDER BY cid, mid, moid, first_cap"
    )
    ids = tuple(itertools.chain.from_iterable(zip(key_min[fixed:3], key_max[fixed:3], strict=True)))
    cap_lo, cap_hi = key_min.cap, key_max.cap
    times = (max(cap_lo - max_span, _INT64_MIN), cap_hi, cap_lo, key_min.acq, key_max.acq)
    for prefix in itertools.product(*(range(key_min[i], key_max[i]) for i in range(fixed))):
        yield sql, prefix + ids + times


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit BEGIN / COMMIT. check_same_thread is off because
    # reader connections move between the pool's threads (never used by two at once).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=60000")
    return conn


class SqliteStorage(Storage):
    """Records in ``<data_dir>/tstorage.sqlite3``; open with :meth:`open`."""

    def __init__(
        self,
        path: str,
        writer: sqlite3.Connection,
        synchronous: str,
        last_acq: int,
        lock_fd: int,
    ) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self.clock = AcqClock(last_acq)
        self._synchronous = synchronous
        self._writer = writer
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="tstorage-sqlite-writer")
        self._read_threads = ThreadPoolExecutor(2, thread_name_prefix="tstorage-sqlite-reader")
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Held by a PUT from its first streamed write to its commit: its rows share the single
        # write connection's open transaction, so no other write may interleave.
        self.write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, data_dir: str, synchronous: Literal["normal", "full"] = "normal"
    ) -> SqliteStorage:
        """Open (creating if needed) the database in ``data_dir``.

        Raises ``OSError`` when another server holds the directory: two servers on one
        database would hand out acqs from two clocks.
        """
        os.makedirs(data_dir, exist_ok=True)
        path = os.path.join(data_dir, DB_FILENAME)
        lock_fd = _lock_directory(data_dir)

        def setup() -> tuple[sqlite3.Connection, int]:
            conn = _connect(path, synchronous)
            # Interleaved series insert all over the B-tree: a larger page cache for the one
            # writer measured 10-20 % faster ingest than the 2 MiB default.
            conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            try:
                _prepare_schema(conn, path)
            except BaseException:
                conn.close()
                raise
            row = conn.execute(_META, ("last_acq",)).fetchone()
            return conn, (row[0] if row else -1)

        try:
            writer, last_acq = await asyncio.to_thread(setup)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, writer, synchronous, last_acq, lock_fd)

    async def run_write(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(write_connection, *args)`` on the writer thread, in submission order.

        Shielded: once submitted the step completes even if the awaiting task is cancelled, so
        the write connection is never left mid-statement.
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._write_thread, func, self._writer, *args)
        return await asyncio.shield(future)

    def submit_write(self, func: Callable[..., object], *args: Any) -> None:
        """Queue a write step without waiting (used to roll back from a cancelled task)."""
        self._write_thread.submit(func, self._writer, *args)

    def begin_put(self, with_acq: bool) -> PutTransaction:
        return _SqlitePut(self, with_acq)

    def _borrow_reader(self) -> sqlite3.Connection:
        with self._readers_lock:
            if self._idle_readers:
                return self._idle_readers.pop()
        return _connect(self.path, self._synchronous)

    def _return_reader(self, conn: sqlite3.Connection) -> None:
        with self._readers_lock:
            self._idle_readers.append(conn)

    async def read(self, key_min: Key, key_max: Key) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(self._read_threads, self._borrow_reader)
        # One read transaction for the whole GET: a consistent snapshot across sub-queries.
        box = _BoxRead(conn, key_min, key_max)
        try:
            while True:
                chunk = await loop.run_in_executor(self._read_threads, box.next_chunk)
                if not chunk:
                    break
                yield chunk
        finally:
            await loop.run_in_executor(self._read_threads, box.finish)
            self._return_reader(conn)

    async def close(self) -> None:
        def shutdown(conn: sqlite3.Connection) -> None:
            # Fold the WAL back into the main file so a clean stop leaves a single file.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

        await self.run_write(shutdown)
        self._write_thread.shutdown(wait=True)
        self._read_threads.shutdown(wait=True)
        with self._readers_lock:
            for conn in self._idle_readers:
                conn.close()
            self._idle_readers.clear()
        os.close(self._lock_fd)  # releases the directory lock


def _lock_directory(data_dir: str) -> int:
    """Take the data directory's exclusive lock (released when the fd closes or we die)."""
    fd = os.open(os.path.join(data_dir, LOCK_FILENAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(f"data directory {data_dir} is in use by another tstorage-server") from None
    return fd


def _prepare_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the schema in a new database, migrate a schema 1 one, or refuse another."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version == SCHEMA_VERSION:
        return
    if (version == 0 and not tables & {"records", "blocks"}) or (
        version == 1 and "records" in tables
    ):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            if version == 1:
                _migrate_v1(conn)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return
    raise OSError(f"{path} has schema version {version}; this server reads {SCHEMA_VERSION}")


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """Turn schema 1 (a row per record) into blocks, inside the caller's transaction.

    Schema 1 rows are unique by key and read in key order, so each series' records become
    sorted, non-overlapping blocks. A crash before the commit leaves the schema 1 database
    as it was.
    """
    cursor = conn.execute(
        "SELECT cid, mid, moid, cap, acq, frame FROM records ORDER BY cid, mid, moid, cap, acq"
    )
    series: tuple[int, int, int] | None = None
    caps: list[int] = []
    acqs: list[int] = []
    parts: list[bytes] = []
    max_span = 0

    def flush() -> None:
        nonlocal max_span
        if series is not None and parts:
            block = joined_block(series[0], parts, array("q", caps), array("q", acqs))
            max_span = max(max_span, _insert_pieces(conn, *series, block))
        caps.clear()
        acqs.clear()
        parts.clear()

    size = 0
    for cid, mid, moid, cap, acq, frame in cursor:
        if (cid, mid, moid) != series or len(parts) >= BLOCK_MAX_RECORDS or size >= BLOCK_MAX_BYTES:
            flush()
            series, size = (cid, mid, moid), 0
        caps.append(cap)
        acqs.append(acq)
        parts.append(frame)
        size += len(frame)
    flush()
    cursor.close()
    conn.execute("DROP TABLE records")
    conn.execute(_SAVE_MAX_SPAN, (max_span,))


def _blob(column: array[int]) -> bytes:
    """An int array as a little-endian blob."""
    if sys.byteorder == "big":
        column = array(column.typecode, column)
        column.byteswap()
    return column.tobytes()


def _column(data: bytes) -> array[int]:
    """A little-endian int64 blob as an array."""
    column = array("q")
    column.frombytes(data)
    if sys.byteorder == "big":
        column.byteswap()
    return column


def _block_params(cid: int, mid: int, moid: int, block: FrameBlock) -> tuple[Any, ...]:
    """The column values of a (sorted, unique) block, in ``_BLOCK_COLUMNS`` order."""
    caps, acqs = block.caps, block.acqs
    return (
        cid,
        mid,
        moid,
        caps[0],
        caps[-1],
        acqs[0],
        acqs[-1],
        min(acqs),
        max(acqs),
        len(caps),
        block.size,
        _blob(caps),
        _blob(acqs),
        None if block.offsets is None else _blob(block.offsets),
        block.frames,
    )


def _span(block: FrameBlock) -> int:
    return min(block.caps[-1] - block.caps[0], _INT64_MAX)


def _insert_pieces(
    conn: sqlite3.Connection, cid: int, mid: int, moid: int, block: FrameBlock
) -> int:
    """Insert a sorted, unique block as new blocks of bounded size; return the widest span."""
    per = BLOCK_MAX_RECORDS
    if len(block.frames) > BLOCK_MAX_BYTES:
        per = min(per, max(1, BLOCK_MAX_BYTES * len(block) // len(block.frames)))
    if len(block) <= per:
        conn.execute(_INSERT_BLOCK, _block_params(cid, mid, moid, block))
        return _span(block)
    pieces = [cut(block, lo, min(lo + per, len(block))) for lo in range(0, len(block), per)]
    conn.executemany(_INSERT_BLOCK, [_block_params(cid, mid, moid, piece) for piece in pieces])
    return max(map(_span, pieces))


def _write_block(conn: sqlite3.Connection, cid: int, mid: int, moid: int, block: FrameBlock) -> int:
    """Store a block of one series (any order); return the widest cap span written.

    Merged into the series' latest block when that one is small: that block has the highest
    seq of the series, so the merged records (the new ones winning on equal keys) may keep it.
    """
    block = normalized(block)
    below = MERGE_BELOW_RECORDS
    latest = conn.execute(_LATEST_BLOCK, (below, below, below, below, cid, mid, moid)).fetchone()
    if latest is not None:
        seq, count, nbytes, last_cap, last_acq, size, caps, acqs, offsets, frames = latest
        if (
            count < below
            and count + len(block) <= BLOCK_MAX_RECORDS
            and nbytes + len(block.frames) <= BLOCK_MAX_BYTES
        ):
            old = FrameBlock(
                cid,
                frames,
                size,
                None if offsets is None else _column(offsets),
                array("q"),
                array("i"),
                _column(caps),
                _column(acqs),
            )
            merged = concat([old, block])
            if (block.caps[0], block.acqs[0]) <= (last_cap, last_acq):  # not simply appended
                merged = sort_unique(merged)
            conn.execute(_UPDATE_BLOCK, (*_block_params(cid, mid, moid, merged), seq))
            return _span(merged)
    return _insert_pieces(conn, cid, mid, moid, block)


class _BoxRead:
    """The frames of a box from one read transaction, a chunk of records at a time.

    Per series, blocks whose (cap, acq) ranges do not overlap are sliced straight from their
    blobs (incremental blob reads: only the bytes sent are copied); overlapping ones are
    loaded, merged by seq (last write wins) and re-sorted. The GC is paused per chunk.
    """

    def __init__(self, conn: sqlite3.Connection, key_min: Key, key_max: Key) -> None:
        self._conn = conn
        self._key_min = key_min
        self._key_max = key_max
        self._segments: Iterator[_Segment] | None = None
        self._segment: _Segment | None = None
        self._blob: sqlite3.Blob | None = None
        self._blob_seq = -1

    def next_chunk(self) -> bytes:
        """The next frames (up to ``READ_CHUNK_ROWS`` records), or b"" when the box is done."""
        with gc_paused():
            if self._segments is None:
                self._conn.execute("BEGIN")
                self._segments = self._all_segments()
            budget = READ_CHUNK_ROWS
            parts: list[Any] = []
            while budget:
                if self._segment is None:
                    self._segment = next(self._segments, None)
                    if self._segment is None:
                        break
                source, lo, hi, size, offsets = self._segment
                take = min(hi, lo + budget)
                if size:
                    start, end = lo * size, take * size
                else:
                    assert offsets is not None
                    start, end = offsets[lo], offsets[take]
                parts.append(self._frames(source, start, end))
                budget -= take - lo
                self._segment = None if take == hi else (source, take, hi, size, offsets)
            return b"".join(parts)

    def _frames(self, source: int | bytes | bytearray, start: int, end: int) -> Any:
        if not isinstance(source, int):
            return memoryview(source)[start:end]
        return self._read_blob("frames", source, start, end)

    def _read_blob(self, column: str, seq: int, start: int, end: int) -> bytes:
        if column != "frames":
            with self._conn.blobopen("blocks", column, seq, readonly=True) as blob:
                blob.seek(start)
                return blob.read(end - start)
        if self._blob_seq != seq:
            self._close_blob()
            self._blob = self._conn.blobopen("blocks", "frames", seq, readonly=True)
            self._blob_seq = seq
        assert self._blob is not None
        self._blob.seek(start)
        return self._blob.read(end - start)

    def _close_blob(self) -> None:
        if self._blob is not None:
            self._blob.close()
            self._blob = None
            self._blob_seq = -1

    def _all_segments(self) -> Iterator[_Segment]:
        row = self._conn.execute(_META, ("max_span",)).fetchone()
        max_span = row[0] if row else 0
        for sql, params in block_queries(self._key_min, self._key_max, max_span):
            series: list[_BlockRow] = []
            for block in self._conn.execute(sql, params):
                if series and block[1:4] != series[0][1:4]:
                    yield from self._series_segments(series)
                    series = []
                series.append(block)
            if series:
                yield from self._series_segments(series)

    def _series_segments(self, blocks: list[_BlockRow]) -> Iterator[_Segment]:
        """The segments of one series: groups of blocks whose key ranges overlap."""
        blocks.sort(key=_first_key)
        group: list[_BlockRow] = []
        group_end = (0, 0)
        for block in blocks:
            if group and _first_key(block) <= group_end:
                group.append(block)
                group_end = max(group_end, _last_key(block))
                continue
            if group:
                yield from self._group_segments(group)
            group, group_end = [block], _last_key(block)
        if group:
            yield from self._group_segments(group)

    def _group_segments(self, group: list[_BlockRow]) -> Iterator[_Segment]:
        cap_lo, cap_hi = self._key_min.cap, self._key_max.cap
        acq_lo, acq_hi = self._key_min.acq, self._key_max.acq
        if len(group) == 1:
            (seq, _, _, _, first_cap, last_cap, _, _, block_acq_lo, block_acq_hi, count, size) = (
                group[0]
            )
            offsets = None
            if not size:
                offsets = _column(self._read_blob("offsets", seq, 0, 8 * (count + 1)))
            lo, hi = 0, count
            if first_cap < cap_lo or last_cap >= cap_hi:
                caps = _column(self._read_blob("caps", seq, 0, 8 * count))
                lo, hi = bisect_left(caps, cap_lo), bisect_left(caps, cap_hi)
            if lo >= hi:
                return
            if acq_lo <= block_acq_lo and block_acq_hi < acq_hi:
                yield seq, lo, hi, size, offsets
                return
            block = self._load(seq, lo, hi, size, offsets)
        else:
            # Overlapping writes: the in-range records of every block, oldest write first,
            # merged so that the last write of a key wins.
            parts = []
            for seq, *_, count, size in sorted(group):
                offsets = None
                if not size:
                    offsets = _column(self._read_blob("offsets", seq, 0, 8 * (count + 1)))
                caps = _column(self._read_blob("caps", seq, 0, 8 * count))
                lo, hi = bisect_left(caps, cap_lo), bisect_left(caps, cap_hi)
                if lo < hi:
                    parts.append(self._load(seq, lo, hi, size, offsets))
            if not parts:
                return
            block = sort_unique(concat(parts))
        acqs = block.acqs
        keep = [i for i, acq in enumerate(acqs) if acq_lo <= acq < acq_hi]
        if len(keep) < len(acqs):
            block = pick(block, keep)
        if len(block):
            yield block.frames, 0, len(block), block.size, block.offsets

    def _load(
        self, seq: int, lo: int, hi: int, size: int, offsets: array[int] | None
    ) -> FrameBlock:
        """Records ``lo`` to ``hi`` of a stored block, in memory."""
        if size:
            start, end = lo * size, hi * size
        else:
            assert offsets is not None
            start, end = offsets[lo], offsets[hi]
            offsets = array("q", [o - start for o in offsets[lo : hi + 1]])
        return FrameBlock(
            0,
            self._read_blob("frames", seq, start, end),
            size,
            offsets,
            array("q"),
            array("i"),
            _column(self._read_blob("caps", seq, 8 * lo, 8 * hi)),
            _column(self._read_blob("acqs", seq, 8 * lo, 8 * hi)),
        )

    def finish(self) -> None:
        """End the read transaction (also when the GET was abandoned)."""
        self._close_blob()
        self._segments = None
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")


_BlockRow = tuple[int, int, int, int, int, int, int, int, int, int, int, int]
"""seq, cid, mid, moid, first_cap, last_cap, first_acq, last_acq, acq_lo, acq_hi, count, size"""

_Segment = tuple[int | bytes | bytearray, int, int, int, "array[int] | None"]
"""Records ``lo`` to ``hi`` of frames: (a block's seq or the bytes, lo, hi, size, offsets)."""


def _first_key(block: _BlockRow) -> tuple[int, int]:
    return block[4], block[6]


def _last_key(block: _BlockRow) -> tuple[int, int]:
    return block[5], block[7]


Batches = list[tuple[int, Rows]]
"""(cid, rows) pairs: PUT rows when an acq is assigned, PUTA rows otherwise."""


def _insert(conn: sqlite3.Connection, batches: Batches, acq: int | None) -> None:
    """Insert batches; ``acq`` is the first acq to assign (PUT), or None to keep row acqs (PUTA)."""
    max_span = 0
    for cid, rows in merge_runs(batches, _RUN_LIMIT):
        for mid, moid, block in series_blocks(cid, rows, acq):
            max_span = max(max_span, _write_block(conn, cid, mid, moid, block))
        if acq is not None:
            acq += len(rows)
    conn.execute(_SAVE_MAX_SPAN, (max_span,))


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def _commit(conn: sqlite3.Connection, last_acq: int) -> None:
    conn.execute(_SAVE_LAST_ACQ, (last_acq,))
    conn.execute("COMMIT")


def _write_all(
    conn: sqlite3.Connection,
    batches: Batches,
    acq: int | None,
    last_acq: int,
) -> None:
    _begin(conn)
    try:
        _insert(conn, batches, acq)
        _commit(conn, last_acq)
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class _SqlitePut(PutTransaction):
    """A PUT staged in memory up to ``STAGE_LIMIT_BYTES``, streamed into a transaction beyond.

    Staging keeps small PUTs (the common case) from holding the writer while their client is
    still sending; streaming keeps memory bounded for arbitrarily large ones.
    """

    def __init__(self, storage: SqliteStorage, with_acq: bool) -> None:
        self._storage = storage
        self._clock = storage.clock
        self._with_acq = with_acq
        self._staged: Batches = []
        self._staged_bytes = 0
        self._streaming = False
        self._first_acq = -1  # first acq assigned (and held) by this PUT, -1 before any
        self._last_acq = -1
        self._holding = False

    async def add(self, cid: int, rows: Rows) -> None:
        if not rows:
            return
        self._staged.append((cid, rows))
        if isinstance(rows, RecordRun):
            self._staged_bytes += len(rows.data)
        else:
            # Wire size n plus 64 bytes approximates a staged row with its key tuple.
            self._staged_bytes += sum(map(_first, rows)) + 64 * len(rows)
        if self._staged_bytes < STAGE_LIMIT_BYTES:
            return
        if not self._streaming:
            await self._storage.write_lock.acquire()
            self._streaming = True
            try:
                await self._storage.run_write(_begin)
            except BaseException:
                self._streaming = False
                self._storage.write_lock.release()
                raise
        await self._flush()

    async def _flush(self) -> None:
        batches, self._staged, self._staged_bytes = self._staged, [], 0
        acq = None if self._with_acq else self._assign(sum(len(rows) for _, rows in batches))
        await self._storage.run_write(_insert, batches, acq)

    def _assign(self, count: int) -> int:
        if count == 0:
            return self._clock.next_acq()
        base = self._clock.assign(count)
        if self._first_acq < 0:
            self._first_acq = base
            self._clock.hold(base)
            self._holding = True
        self._last_acq = base + count - 1
        return base

    def _acq_range(self) -> tuple[int, int]:
        if self._with_acq or self._first_acq < 0:
            return NO_ACQ_RANGE
        return self._first_acq, self._last_acq

    def _release(self) -> None:
        """Release the held acq and the writer (idempotent)."""
        if self._holding:
            self._holding = False
            self._clock.release(self._first_acq)
        if self._streaming:
            self._streaming = False
            self._storage.write_lock.release()

    async def commit(self) -> tuple[int, int]:
        storage = self._storage
        try:
            if self._streaming:
                if self._staged:
                    await self._flush()
                await storage.run_write(_commit, self._clock.last_assigned)
            elif self._staged:
                async with storage.write_lock:
                    batches, self._staged = self._staged, []
                    count = sum(len(rows) for _, rows in batches)
                    acq = None if self._with_acq else self._assign(count)
                    await storage.run_write(_write_all, batches, acq, self._clock.last_assigned)
            return self._acq_range()
        except BaseException:
            # Cancelled, or the commit failed (disk full ...): never leave the shared write
            # connection inside this transaction. Queued, so it runs before any later write.
            if self._streaming:
                storage.submit_write(_rollback)
            raise
        finally:
            self._release()

    async def rollback(self) -> None:
        self._staged = []
        if self._streaming:
            with contextlib.suppress(Exception):
                await self._storage.run_write(_rollback)
        self._release()
