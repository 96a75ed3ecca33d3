"""Bulk ingest paths (issue 14): parsed wire runs, column building, series splitting.

The parser hands runs of equal-size records out in wire form (``RecordRun``); the backends
convert them with strided copies and split them into series by pattern (one series, a fixed
cycle through series, or anything else). These tests drive real request bytes through the
parser into both backends and compare every answer with a plain dict model, and check the
building blocks against straightforward per-record code.
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st
from server_raw import Key5, split_frames
from server_raw import encode_put_batches as encode_put

from tstorage_client.protocol.server import (
    NEED_DATA,
    RECORD_HEAD,
    PutaBatch,
    PutBatch,
    PutEnd,
    RecordRun,
    RequestParser,
)
from tstorage_client.record import Key
from tstorage_server.acq import AcqClock
from tstorage_server.rules import storable_rows
from tstorage_server.storage import memory as memory_storage
from tstorage_server.storage.base import Storage
from tstorage_server.storage.frames import build_block, progression, series_period
from tstorage_server.storage.memory import MemoryStorage
from tstorage_server.storage.sqlite import SqliteStorage

FRAME = struct.Struct("<iiqiqq")


def series_ids(pattern: str, count: int, draw_ids: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(mid, moid) per record: one series, a fixed cycle, or the drawn order as it is."""
    if pattern == "one":
        return [draw_ids[0]] * count
    if pattern == "cycle":
        return [draw_ids[i % len(draw_ids)] for i in range(count)]
    return [draw_ids[i % len(draw_ids)] for i in range(count)][::-1][: count // 2 + 1] * 2


ids = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=4)
request = st.tuples(
    st.booleans(),  # with_acq
    st.integers(0, 2),  # cid
    st.sampled_from(["one", "cycle", "mixed"]),
    ids,
    st.integers(1, 40),  # records
    st.sampled_from([0, 1, 3, 8, 12, 100, 300]),  # payload size (strided and per-record builds)
    st.integers(0, 2**32),  # seed for caps, acqs, payload bytes
)
box = st.tuples(
    st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2), st.integers(0, 30)),
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 31)),
    st.sampled_from([(-(2**63), 2**63 - 1), (0, 1005), (1000, 1010), (3, 20)]),
)


def request_records(req) -> tuple[bool, int, list[tuple[Key5, bytes]]]:
    with_acq, cid, pattern, drawn, count, size, seed = req
    records = []
    for i, (mid, moid) in enumerate(series_ids(pattern, count, drawn)):
        value = (seed * 2654435761 + i * 40503) % 2**32
        cap = value % 31 if value % 5 else i  # mostly in order, with repeats and steps back
        acq = (value // 31) % 8 + (1000 if value % 3 == 0 else 0)  # near the PUT acqs too
        payload = bytes((value + k) % 256 for k in range(size))
        records.append(((cid, mid, moid, cap, acq if with_acq else -1), payload))
    return with_acq, cid, records


async def ingest(storage: Storage, data: bytes, with_acq: bool) -> tuple[int, int]:
    """Parse one request and store it exactly as the connection does."""
    parser = RequestParser()
    parser.receive_data(data)
    parser.receive_data(b"")
    put = storage.begin_put(with_acq)
    while True:
        event = parser.next_event()
        assert event is not NEED_DATA
        if isinstance(event, PutBatch | PutaBatch):
            await put.add(event.cid, storable_rows(event.cid, event.rows, with_acq))
        elif isinstance(event, PutEnd):
            return await put.commit()


async def answers(storage: Storage, requests, boxes) -> tuple[list, list]:
    storage.clock = AcqClock(last_assigned=999, clock=lambda: 0)
    ranges = []
    for req in requests:
        with_acq, _, records = request_records(req)
        ranges.append(await ingest(storage, encode_put(records, with_acq), with_acq))
    out = []
    for low, high, (acq_lo, acq_hi) in boxes:
        key_min, key_max = Key(*low, acq_lo), Key(*high, acq_hi)
        out.append(split_frames(b"".join([c async for c in storage.read(key_min, key_max)])))
    await storage.close()
    return ranges, out


def model(requests, boxes) -> tuple[list, list]:
    store: dict[Key5, bytes] = {}
    ranges = []
    next_acq = 1000
    for req in requests:
        with_acq, _, records = request_records(req)
        if with_acq:
            for key, payload in records:
                store[key] = payload
            ranges.append((-1, -1))
            continue
        for i, (key, payload) in enumerate(records):
            store[(*key[:4], next_acq + i)] = payload
        ranges.append((next_acq, next_acq + len(records) - 1))
        next_acq += len(records)
    out = []
    for low, high, (acq_lo, acq_hi) in boxes:
        lows, highs = (*low, acq_lo), (*high, acq_hi)
        out.append(
            sorted(
                (k, p)
                for k, p in store.items()
                if all(lo <= c < hi for c, lo, hi in zip(k, lows, highs, strict=True))
            )
        )
    return ranges, out


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(request, min_size=1, max_size=5), boxes=st.lists(box, min_size=1, max_size=3)
)
def test_parsed_runs_give_the_model_answers_on_both_backends(requests, boxes) -> None:
    expected = model(requests, boxes)
    assert asyncio.run(answers(MemoryStorage(), requests, boxes)) == expected

    async def sqlite_answers(path: str):
        return await answers(await SqliteStorage.open(path), requests, boxes)

    with tempfile.TemporaryDirectory() as tmp:
        assert asyncio.run(sqlite_answers(tmp)) == expected


def test_a_long_put_is_merged_into_commit_steps_and_stays_in_order(monkeypatch) -> None:
    # Many parser runs of one batch are joined (up to COMMIT_STEP_ROWS) before conversion.
    monkeypatch.setattr(memory_storage, "COMMIT_STEP_ROWS", 1000)
    records = [((1, i % 7, 0, i, -1), struct.pack("<d", i)) for i in range(30_000)]
    storage = MemoryStorage()
    acq_min, acq_max = asyncio.run(ingest(storage, encode_put(records), False))
    assert acq_max - acq_min == len(records) - 1

    async def read_all() -> list[tuple[int, int, int]]:
        data = b"".join([c async for c in storage.read(Key.min(), Key.max())])
        return [FRAME.unpack_from(data, pos)[2:6:2] for pos in range(0, len(data), 44)]

    got = asyncio.run(read_all())
    # Series (mid) by series, caps ascending; each record keeps its own acq.
    assert got == sorted(((i % 7, i) for i in range(30_000)), key=lambda t: (t[0], t[1]))


def test_strided_frames_match_per_record_packing() -> None:
    for with_acq in (False, True):
        for size in (0, 1, 3, 8, 12, 100, 300):
            key_size = 28 if with_acq else 20
            rows = [
                (key_size + size, i * 7 - 2**40, -i, 2**62 - i, -(2**50) + i, bytes([i]) * size)
                for i in range(23)
            ]
            if not with_acq:
                rows = [(n, m, o, c, p) for n, m, o, c, _, p in rows]
            layout = "<iqiqq" if with_acq else "<iqiq"
            run = RecordRun(
                b"".join(struct.pack(layout, *r[:-1]) + r[-1] for r in rows), *rows[0][:1], with_acq
            )
            assert list(run) == rows
            for start, step in ((0, 1), (2, 5), (22, 3)):
                block = build_block(9, run, None if with_acq else 500, start, step)
                expected = []
                for i in range(start, len(rows), step):
                    _, mid, moid, cap, *rest = rows[i]
                    acq = rest[0] if with_acq else 500 + i
                    expected.append(
                        RECORD_HEAD.pack(32 + size, 9, mid, moid, cap, acq) + rows[i][-1]
                    )
                assert bytes(block.frames) == b"".join(expected)
                assert [bytes(f) for f in block.frame_list()] == expected
                assert list(block.caps) == [rows[i][3] for i in range(start, len(rows), step)]
                per_record = build_block(9, list(run), None if with_acq else 500, start, step)
                assert bytes(per_record.frames) == bytes(block.frames)
                assert list(per_record.acqs) == list(block.acqs)


def test_progression_crosses_16_bit_and_sign_boundaries() -> None:
    for first, length in [(0, 5), (-70_000, 200_000), (2**63 - 11, 10), (-(2**63), 70_000), (7, 0)]:
        assert progression(first, length) == array("q", range(first, first + length))


def test_series_period_finds_one_series_and_fixed_cycles_only() -> None:
    def period(mids: list[int], moids: list[int] | None = None) -> int:
        return series_period(array("q", mids), array("i", moids or [0] * len(mids)))

    assert period([5] * 10) == 1
    assert period([1, 2, 3] * 10) == 3
    assert period([1, 2, 3] * 10 + [1]) == 3  # a partial last cycle
    assert period([1, 1, 2, 2] * 10, [0, 1] * 20) == 4  # series are (mid, moid) pairs
    assert period([1, 2, 1, 3] * 10) == 0  # not a cycle
    assert period([1, 2, 3, 4]) == 0  # too few records per series to be worth it
