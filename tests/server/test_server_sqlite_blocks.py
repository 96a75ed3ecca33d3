"""SQLite schema 2 (a series' records stored as blocks) through the real server.

Block limits are made tiny here, so a few dozen records already span many blocks: merges
into a series' latest block, several blocks per PUT, blocks that overlap (upserts, late
data), GET ranges that start and end inside blocks. Answers are checked against a plain
dict model and against the memory backend; a schema 1 database (built here with the old
schema SQL) is migrated on open; everything survives restarts.
"""

from __future__ import annotations

import itertools
import sqlite3
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_raw import GET_FRAME, KEY_MAX, KEY_MIN, Key5, RawClient, encode_put_batches

from tstorage_server.storage import sqlite as sqlite_storage
from tstorage_server.testing import RunningServer, serve

Records = list[tuple[Key5, bytes]]


def tiny_blocks(monkeypatch: pytest.MonkeyPatch, stream: bool = True) -> None:
    """Block limits small enough that every test spans many blocks and merges.

    With ``stream`` a PUT of more than a few records streams in steps (each step of a PUT
    takes its own acq range, so its acqs are not ``acq_min + i``: PUTA only then).
    """
    monkeypatch.setattr(sqlite_storage, "BLOCK_MAX_RECORDS", 5)
    monkeypatch.setattr(sqlite_storage, "BLOCK_MAX_BYTES", 400)
    monkeypatch.setattr(sqlite_storage, "MERGE_BELOW_RECORDS", 3)
    monkeypatch.setattr(sqlite_storage, "READ_CHUNK_ROWS", 7)
    if stream:
        monkeypatch.setattr(sqlite_storage, "STAGE_LIMIT_BYTES", 300)


def put(raw: RawClient, records: Records, with_acq: bool) -> tuple[int, int, int]:
    raw.send(encode_put_batches(records, with_acq))
    return raw.put_response()


def apply(store: dict[Key5, bytes], records: Records, acq_min: int | None) -> None:
    """The model of a PUT (``acq_min``: record i gets acq_min + i) or a PUTA (None)."""
    for i, (key, payload) in enumerate(records):
        store[key if acq_min is None else (*key[:4], acq_min + i)] = payload


def in_box(store: dict[Key5, bytes], low: Key5, high: Key5) -> list[tuple[Key5, bytes]]:
    return sorted(
        (k, p)
        for k, p in store.items()
        if all(a <= c < b for c, a, b in zip(k, low, high, strict=True))
    )


def block_count(data_dir) -> int:
    conn = sqlite3.connect(data_dir / sqlite_storage.DB_FILENAME)
    try:
        return int(conn.execute("SELECT count(*) FROM blocks").fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------ model-based, both backends


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[RunningServer, RunningServer]]:
    """A memory server and a SQLite server, shared by the examples."""
    with serve() as memory, serve(data_dir=tmp_path_factory.mktemp("blocks")) as sqlite:
        yield memory, sqlite


_cids = itertools.count(1)
payload = st.sampled_from([b"", b"a", b"bb", b"12345678", b"x" * 30])
record = st.tuples(
    st.integers(0, 2),  # cid offset
    st.integers(0, 2),  # mid
    st.integers(0, 1),  # moid
    st.integers(0, 40),  # cap
    st.integers(0, 12),  # acq (PUTA only)
)
operation = st.one_of(
    st.tuples(
        st.sampled_from(["put", "puta"]),
        st.lists(st.tuples(record, payload), min_size=1, max_size=60),
        st.booleans(),  # one payload size for the whole request (the bulk paths)
    ),
    st.tuples(
        st.just("get"),
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1), st.integers(0, 40)),
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 41)),
        st.sampled_from([(KEY_MIN[4], KEY_MAX[4]), (0, 13), (3, 8), (5, 6)]),
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=st.lists(operation, min_size=1, max_size=12))
def test_random_puts_upserts_and_gets_match_the_model_on_both_backends(
    servers: tuple[RunningServer, RunningServer], operations
) -> None:
    base = next(_cids) * 4  # a fresh cid range per example: examples do not see each other
    stores: list[dict[Key5, bytes]] = [{}, {}]
    with (
        pytest.MonkeyPatch.context() as patch,
        RawClient(servers[0].port) as memory,
        RawClient(servers[1].port) as sqlite,
    ):
        tiny_blocks(patch, stream=False)  # read by the server thread at each request
        for op in operations:
            if op[0] == "get":
                _, low, high, (acq_lo, acq_hi) = op
                key_min = (base + low[0], *low[1:], acq_lo)
                key_max = (
                    base + low[0] + high[0],
                    *(a + b for a, b in zip(low[1:], high[1:], strict=True)),
                    acq_hi,
                )
                for raw, store in zip((memory, sqlite), stores, strict=True):
                    result = raw.get(key_min, key_max)
                    assert result.ok
                    assert result.records == in_box(store, key_min, key_max)
                continue
            kind, drawn, one_size = op
            records = [
                ((base + c, mid, moid, cap, acq), drawn[0][1] if one_size else data)
                for (c, mid, moid, cap, acq), data in drawn
            ]
            with_acq = kind == "puta"
            for raw, store in zip((memory, sqlite), stores, strict=True):
                status, acq_min, acq_max = put(raw, records, with_acq)
                assert status == 0
                if not with_acq:
                    assert acq_max - acq_min == len(records) - 1
                apply(store, records, None if with_acq else acq_min)
        everything = ((base, *KEY_MIN[1:]), (base + 3, *KEY_MAX[1:]))
        for raw, store in zip((memory, sqlite), stores, strict=True):
            assert raw.get(*everything).records == sorted(store.items())


# ------------------------------------------------------------------ upserts, cuts, restarts


def test_upserts_across_blocks_and_ranges_cutting_blocks_survive_restarts(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_blocks(monkeypatch)
    store: dict[Key5, bytes] = {}
    first = [((1, 7, 0, cap, 1), struct.pack("<d", cap)) for cap in range(0, 60, 2)]
    # Rewrites every third key (spanning block boundaries), adds keys between the old ones
    # (late data into old blocks) and one far before everything.
    second = [((1, 7, 0, cap, 1), b"new") for cap in range(0, 60, 3)]
    second += [((1, 7, 0, cap, 1), b"late") for cap in range(1, 60, 4)] + [((1, 7, 0, -5, 1), b"")]
    with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
        for records in (first, second):
            assert put(raw, records, True)[0] == 0
            apply(store, records, None)
        assert block_count(tmp_path) >= 10
    for _ in range(2):  # restarted twice: the second start reads what the first one wrote
        with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
            assert raw.get().records == sorted(store.items())
            for lo, hi in [(0, 60), (3, 4), (7, 23), (11, 12), (-6, 1), (58, 100), (25, 26)]:
                low, high = (1, 7, 0, lo, KEY_MIN[4]), (2, 8, 1, hi, KEY_MAX[4])
                assert raw.get(low, high).records == in_box(store, low, high)
            # An acq range that keeps only some records of the overlapping blocks.
            low, high = (1, 7, 0, -10, 1), (2, 8, 1, 60, 2)
            assert raw.get(low, high).records == sorted(store.items())
            assert raw.get((1, 7, 0, 0, 2), (2, 8, 1, 60, 3)).records == []
            records = [((1, 7, 0, cap, 1), b"again") for cap in range(5, 15)]
            assert put(raw, records, True)[0] == 0
            apply(store, records, None)


def test_a_put_onto_the_keys_of_an_earlier_block_wins_over_it(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_blocks(monkeypatch)
    with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
        old = [((3, 1, 1, cap, 50), b"old") for cap in range(20)]
        assert put(raw, old, True)[0] == 0
        # Written later, one by one (each its own small block or a merge), back to front.
        for cap in reversed(range(0, 20, 2)):
            assert put(raw, [((3, 1, 1, cap, 50), b"new")], True)[0] == 0
        got = raw.get().records
        assert [key[3] for key, _ in got] == list(range(20))
        assert [data for _, data in got] == [b"new", b"old"] * 10


def test_large_puts_become_few_blocks_and_small_ones_are_merged(tmp_path) -> None:
    with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
        # 20,000 records of 10 interleaved series, as one PUT: a block or two per series.
        records = [((1, i % 10, 0, i, -1), struct.pack("<d", i)) for i in range(20_000)]
        status, acq_min, _ = put(raw, records, False)
        assert status == 0
        assert block_count(tmp_path) <= 20
        # 100 single-record PUTs into one new series merge into its latest block.
        for cap in range(100):
            assert put(raw, [((2, 0, 0, cap, -1), b"s")], False)[0] == 0
        assert block_count(tmp_path) <= 21
        got = raw.get((1, *KEY_MIN[1:]), (2, *KEY_MAX[1:])).records
        assert len(got) == 20_000
        assert got[0] == ((1, 0, 0, 0, acq_min), struct.pack("<d", 0))
        assert [key[3] for key, _ in got[:3]] == [0, 10, 20]
        assert len(raw.get((2, *KEY_MIN[1:]), (3, *KEY_MAX[1:])).records) == 100


# ------------------------------------------------------------------ migration from schema 1

# Schema 1 exactly as the server before schema 2 created it (one row per record, the
# record's GET frame beside its key columns).
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS records (
    cid INTEGER NOT NULL, mid INTEGER NOT NULL, moid INTEGER NOT NULL,
    cap INTEGER NOT NULL, acq INTEGER NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (cid, mid, moid, cap, acq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def schema_1_database(data_dir, records: Records, last_acq: int) -> None:
    data_dir.mkdir(exist_ok=True)
    conn = sqlite3.connect(data_dir / sqlite_storage.DB_FILENAME)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA_1)
    conn.executemany(
        "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?)",
        [(*key, GET_FRAME.pack(32 + len(data), *key) + data) for key, data in records],
    )
    conn.execute("INSERT INTO meta VALUES ('last_acq', ?)", (last_acq,))
    conn.commit()
    conn.close()


def test_a_schema_1_database_is_migrated_and_stays_readable_and_writable(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_blocks(monkeypatch, stream=False)
    data_dir = tmp_path / "data"
    # Several series, mixed payload sizes, repeated caps with different acqs.
    records: Records = [
        ((cid, mid, 0, cap, acq), bytes([cap % 256]) * (cap % 4))
        for cid in (1, 2)
        for mid in (0, 5)
        for cap in range(23)
        for acq in (100, 200)
    ]
    schema_1_database(data_dir, records, last_acq=10**18)
    store = dict(records)
    with serve(data_dir=data_dir) as server, RawClient(server.port) as raw:
        assert raw.get().records == sorted(store.items())
        low, high = (1, 5, 0, 7, 150), (3, 6, 1, 19, 300)
        assert raw.get(low, high).records == in_box(store, low, high)
        # The clock resumes after the stored last acq; upserts onto migrated keys win.
        status, acq_min, _ = put(raw, [((1, 0, 0, 3, -1), b"put")], False)
        assert status == 0
        assert acq_min > 10**18
        apply(store, [((1, 0, 0, 3, -1), b"put")], acq_min)
        upserts = [((2, 5, 0, cap, 100), b"upsert") for cap in range(0, 23, 5)]
        assert put(raw, upserts, True)[0] == 0
        apply(store, upserts, None)
        assert raw.get().records == sorted(store.items())
    conn = sqlite3.connect(data_dir / sqlite_storage.DB_FILENAME)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert version == sqlite_storage.SCHEMA_VERSION == 2
    assert "records" not in tables
    with serve(data_dir=data_dir) as server, RawClient(server.port) as raw:
        assert raw.get().records == sorted(store.items())


def test_an_empty_schema_1_database_is_migrated(tmp_path) -> None:
    schema_1_database(tmp_path, [], last_acq=5)
    with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
        assert raw.get().records == []
        assert put(raw, [((1, 1, 1, 1, -1), b"x")], False)[0] == 0
        assert len(raw.get().records) == 1
