"""Storage backends directly: order, upsert, chunked reads, acq0 with PUTs in flight, index use."""

from __future__ import annotations

import asyncio
import sqlite3
import struct

import pytest
from server_raw import split_frames

from tstorage_client.record import Key
from tstorage_server.storage import memory as memory_storage
from tstorage_server.storage import sqlite as sqlite_storage
from tstorage_server.storage.base import Storage
from tstorage_server.storage.memory import MemoryStorage
from tstorage_server.storage.sqlite import SqliteStorage, block_queries

ALL = (Key.min(), Key.max())
FRAME = struct.Struct("<iiqiqq")


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path):
    store: Storage = (
        MemoryStorage() if request.param == "memory" else await SqliteStorage.open(str(tmp_path))
    )
    yield store
    await store.close()


@pytest.fixture
async def sqlite_store(tmp_path):
    store = await SqliteStorage.open(str(tmp_path))
    yield store
    await store.close()


def put_row(cap: int, payload: bytes = b"p", mid: int = 1, moid: int = 1):
    return (20 + len(payload), mid, moid, cap, payload)


def puta_row(cap: int, acq: int, payload: bytes = b"p", mid: int = 1, moid: int = 1):
    return (28 + len(payload), mid, moid, cap, acq, payload)


async def write(storage: Storage, cid: int, rows, with_acq: bool = False) -> tuple[int, int]:
    put = storage.begin_put(with_acq)
    await put.add(cid, rows)
    return await put.commit()


async def read(storage: Storage, key_min: Key = ALL[0], key_max: Key = ALL[1]) -> list[tuple]:
    return split_frames(b"".join([chunk async for chunk in storage.read(key_min, key_max)]))


async def test_out_of_order_writes_read_back_in_key_order(storage: Storage) -> None:
    await write(storage, 1, [puta_row(5, 1), puta_row(3, 1), puta_row(4, 2), puta_row(4, 1)], True)
    await write(storage, 0, [puta_row(9, 9, mid=2), puta_row(1, 1, mid=2)], True)
    keys = [key for key, _ in await read(storage)]
    assert keys == sorted(keys)
    assert keys[0] == (0, 2, 1, 1, 1)
    assert len(keys) == 6


async def test_upsert_keeps_the_last_write_in_and_across_requests(storage: Storage) -> None:
    await write(
        storage, 1, [puta_row(1, 1, b"a"), puta_row(2, 2, b"b"), puta_row(1, 1, b"c")], True
    )
    assert await read(storage) == [((1, 1, 1, 1, 1), b"c"), ((1, 1, 1, 2, 2), b"b")]
    await write(storage, 1, [puta_row(2, 2, b"d")], True)
    assert await read(storage) == [((1, 1, 1, 1, 1), b"c"), ((1, 1, 1, 2, 2), b"d")]


async def test_rolled_back_put_leaves_nothing(storage: Storage) -> None:
    put = storage.begin_put(False)
    await put.add(1, [put_row(i) for i in range(10)])
    await put.rollback()
    assert await read(storage) == []


async def test_large_ranges_are_read_in_bounded_chunks_with_and_without_acq_filter(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_storage, "READ_CHUNK_ROWS", 100)
    monkeypatch.setattr(sqlite_storage, "READ_CHUNK_ROWS", 100)
    rows = [puta_row(cap, acq=cap % 7, mid=mid) for mid in range(3) for cap in range(1000)]
    await write(storage, 1, rows, True)
    chunks = [chunk async for chunk in storage.read(*ALL)]
    assert len(chunks) >= 30
    assert max(len(c) for c in chunks) <= 100 * (36 + 1)
    assert len(await read(storage)) == 3000
    filtered = await read(storage, Key(0, 1, 0, 100, 2), Key(2, 2, 2, 900, 3))
    assert [key[3] for key, _ in filtered] == [c for c in range(100, 900) if c % 7 == 2]


async def test_a_read_in_progress_is_not_disturbed_by_concurrent_writes(storage: Storage) -> None:
    await write(storage, 1, [puta_row(c, 1) for c in range(0, 20_000, 2)], True)
    reader = storage.read(*ALL)
    first = await anext(reader)
    # Out-of-order inserts and upserts into the series being read.
    await write(storage, 1, [puta_row(c, 1, b"new") for c in range(1, 20_000, 2)], True)
    rest = [chunk async for chunk in reader]
    data = first + b"".join(rest)
    count = 0
    pos = 0
    while pos < len(data):
        count += 1
        pos += 4 + struct.unpack_from("<i", data, pos)[0]
    # Every record stored before the read started is in it; newer ones may or may not be.
    assert 10_000 <= count <= 20_000


async def test_acq0_stays_below_a_streaming_put_until_it_commits(
    sqlite_store: SqliteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "STAGE_LIMIT_BYTES", 1000)
    storage = sqlite_store
    put = storage.begin_put(False)
    await put.add(1, [put_row(i, b"x" * 100) for i in range(20)])  # streams: acqs assigned
    in_flight = storage.clock.stable()
    # Not yet visible, so acq0 must not pass it...
    assert await read(storage) == []
    acq_min, acq_max = await put.commit()
    assert in_flight <= acq_min
    # ...and once committed it is visible and acq0 moves past it.
    assert storage.clock.stable() > acq_max
    assert len(await read(storage)) == 20


def test_small_box_is_split_into_index_seeks() -> None:
    queries = list(block_queries(Key(3, 10, 5, 100, 0), Key(5, 12, 6, 200, 2**62), 30))
    # cid (2 values) x mid (2) x moid (1) become equalities; the first cap is the seek range,
    # from cap_lo minus the widest block span stored.
    assert len(queries) == 4
    sql, params = queries[0]
    assert "cid = ? AND mid = ? AND moid = ? AND first_cap >= ?" in sql
    assert params == (3, 10, 5, 70, 200, 100, 0, 2**62)


def test_wide_box_stays_one_range_query() -> None:
    queries = list(block_queries(*ALL, 0))
    assert len(queries) == 1
    assert "cid >= ?" in queries[0][0]
    # The seek start never goes below the int64 range.
    assert queries[0][1][6] == Key.min().cap


async def test_small_box_query_plan_uses_the_block_index(tmp_path) -> None:
    storage = await SqliteStorage.open(str(tmp_path))
    await storage.close()
    conn = sqlite3.connect(tmp_path / sqlite_storage.DB_FILENAME)
    sql, params = next(block_queries(Key(3, 10, 5, 100, 0), Key(4, 11, 6, 200, 2**62), 10))
    plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    latest = " ".join(
        row[-1]
        for row in conn.execute(
            "EXPLAIN QUERY PLAN " + sqlite_storage._LATEST_BLOCK, (9, 9, 9, 9, 1, 2, 3)
        )
    )
    conn.close()
    assert "SEARCH blocks USING INDEX blocks_by_cap" in plan
    assert "(cid=? AND mid=? AND moid=? AND first_cap>? AND first_cap<?)" in plan
    assert "TEMP B-TREE" not in plan  # the index order is the answer order
    assert "USING INDEX blocks_by_series (cid=? AND mid=? AND moid=?)" in latest
    assert "TEMP B-TREE" not in latest


async def test_a_database_of_another_schema_version_is_refused(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / sqlite_storage.DB_FILENAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(OSError, match="schema version 99"):
        await SqliteStorage.open(str(tmp_path))
    # The directory lock was released: a later open (after fixing the file) is possible.
    (tmp_path / sqlite_storage.DB_FILENAME).unlink()
    storage = await SqliteStorage.open(str(tmp_path))
    await storage.close()


async def test_memory_commit_yields_between_batches_and_holds_acq0_below_itself() -> None:
    storage = MemoryStorage()
    put = storage.begin_put(False)
    for batch in range(3):
        await put.add(1, [put_row(batch * 10 + i) for i in range(10)])
    committing = asyncio.create_task(put.commit())
    await asyncio.sleep(0)  # the commit stores its first batch, then yields
    assert not committing.done()
    held = storage.clock.stable()
    assert len(await read(storage)) == 10  # partly stored...
    acq_min, acq_max = await committing
    assert held == acq_min  # ...but acq0 stayed at the PUT's first acq meanwhile
    assert storage.clock.stable() > acq_max
    assert len(await read(storage)) == 30


async def test_records_written_during_a_get_outside_its_acq_range_are_not_returned(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_storage, "READ_CHUNK_ROWS", 10)
    monkeypatch.setattr(sqlite_storage, "READ_CHUNK_ROWS", 10)
    for mid in range(3):
        await write(storage, 1, [puta_row(cap, 100, mid=mid) for cap in range(20)], True)
    reader = storage.read(Key(0, *Key.min()[1:4], 0), Key(2, *Key.max()[1:4], 101))
    chunks = [await anext(reader)]
    # Later records, above the GET's acq range, land in series the GET has not reached yet.
    for mid in range(3):
        await write(storage, 1, [puta_row(cap, 500, mid=mid) for cap in range(20)], True)
    chunks += [chunk async for chunk in reader]
    data = b"".join(chunks)
    acqs = []
    pos = 0
    while pos < len(data):
        n, *key = FRAME.unpack_from(data, pos)
        acqs.append(key[4])
        pos += 4 + n
    assert acqs == [100] * 60


async def test_put_onto_a_key_a_puta_already_holds_replaces_it(storage: Storage) -> None:
    from tstorage_server.acq import AcqClock

    # A PUTA stored a record with an acq ahead of the server clock...
    await write(storage, 1, [puta_row(6, 2001, b"from puta"), puta_row(7, 2001, b"kept")], True)
    storage.clock = AcqClock(last_assigned=1999, clock=lambda: 0)  # next PUT acqs: 2000, 2001
    # ...and a PUT now assigns that same full key: last write wins, the PUT succeeds.
    assert await write(storage, 1, [put_row(5, b"before"), put_row(6, b"from put")]) == (2000, 2001)
    assert await read(storage) == [
        ((1, 1, 1, 5, 2000), b"before"),
        ((1, 1, 1, 6, 2001), b"from put"),
        ((1, 1, 1, 7, 2001), b"kept"),
    ]


async def test_a_read_holding_a_block_is_not_disturbed_when_a_write_merges_into_it(
    sqlite_store: SqliteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_storage, "READ_CHUNK_ROWS", 3)
    storage = sqlite_store
    await write(storage, 1, [puta_row(c, 1, b"old") for c in range(0, 20, 2)], True)
    reader = storage.read(*ALL)
    first = await anext(reader)  # the reader now holds the (small) block's frames blob
    # Merged into that same block row (it is under MERGE_BELOW_RECORDS): an UPDATE.
    await write(storage, 1, [puta_row(c, 1, b"new") for c in range(20)], True)
    data = first + b"".join([chunk async for chunk in reader])
    # The read sees its snapshot: every old record, none of the merge.
    assert split_frames(data) == [((1, 1, 1, c, 1), b"old") for c in range(0, 20, 2)]
    assert await read(storage) == [((1, 1, 1, c, 1), b"new") for c in range(20)]
