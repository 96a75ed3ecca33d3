"""The put encoder against a plain reference encoder written here, record by record.

The library groups records by cid with buckets and packs rows through ``map``; this
reference does the obvious thing (a stable sort by cid, one ``struct.pack`` per record), so
the wire bytes of both must be identical for any valid input, cids interleaved or not.
"""

from __future__ import annotations

import struct
from itertools import accumulate
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tstorage_client.payload_type import (
    BytesPayloadType,
    PayloadType,
    StructPayloadType,
    TuplePayloadType,
)
from tstorage_client.protocol import _codec
from tstorage_client.protocol._codec import RecordCodec
from tstorage_client.protocol.client import encode_put
from tstorage_client.record import Key, Record

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
CIDS = st.sampled_from([0, 1, 2, 7, 2**31 - 1]) | st.integers(0, 2**31 - 1)
KEYS = st.builds(Key, CIDS, I64, I32, I64, I64)


def reference_put(
    payload_type: PayloadType[Any], records: list[Record[Any]], with_acq: bool, max_batch: int
) -> bytes:
    """PUT/PUTA bytes: header, per-cid batches (ascending cid, input order), end guard."""
    out = [struct.pack("<iQ", 6 if with_acq else 5, 0)]
    by_cid: dict[int, list[bytes]] = {}
    for record in sorted(records, key=lambda r: r.key.cid):  # sorted() is stable
        key = record.key
        payload = payload_type.to_bytes(record.value)
        fields = (key.mid, key.moid, key.cap, key.acq) if with_acq else key[1:4]
        head = struct.pack("<qiqq" if with_acq else "<qiq", *fields)
        by_cid.setdefault(key.cid, []).append(
            struct.pack("<i", len(head + payload)) + head + payload
        )
    for cid, rows in by_cid.items():
        batch: list[bytes] = []
        for row in rows:
            if batch and sum(map(len, batch)) + len(row) > max_batch:
                out.append(struct.pack("<ii", cid, sum(map(len, batch))) + b"".join(batch))
                batch = []
            batch.append(row)
        out.append(struct.pack("<ii", cid, sum(map(len, batch))) + b"".join(batch))
    out.append(struct.pack("<i", -1))
    return b"".join(out)


PAYLOADS: list[tuple[PayloadType[Any], st.SearchStrategy[Any]]] = [
    (StructPayloadType("<d"), st.floats(allow_nan=False)),
    (StructPayloadType("<h"), st.integers(-(2**15), 2**15 - 1)),
    (TuplePayloadType("<if?"), st.tuples(I32, st.floats(width=32, allow_nan=False), st.booleans())),
    (BytesPayloadType(), st.binary(max_size=120)),
    # Payloads of one size take the one-struct-per-row path; bytes-likes of one size do not.
    (BytesPayloadType(), st.binary(min_size=100, max_size=100)),
    (BytesPayloadType(), st.binary(min_size=0, max_size=0)),
    (
        BytesPayloadType(),
        st.binary(min_size=3, max_size=3) | st.binary(min_size=3, max_size=3).map(bytearray),
    ),
]


@st.composite
def puts(draw: st.DrawFn) -> tuple[PayloadType[Any], list[Record[Any]]]:
    payload_type, values = draw(st.sampled_from(PAYLOADS))
    cids = draw(st.lists(CIDS, min_size=1, max_size=4))
    records = draw(
        st.lists(
            st.builds(Record, st.builds(Key, st.sampled_from(cids), I64, I32, I64, I64), values),
            min_size=1,
            max_size=200,
        )
    )
    return payload_type, records


@settings(max_examples=200, deadline=None)
@given(puts(), st.booleans(), st.sampled_from([2**31 - 1, 1, 100, 1000]))
def test_put_bytes_equal_the_reference_encoder(
    case: tuple[PayloadType[Any], list[Record[Any]]], with_acq: bool, max_batch: int
) -> None:
    payload_type, records = case
    got = b"".join(
        encode_put(RecordCodec(payload_type), records, with_acq=with_acq, max_batch_size=max_batch)
    )
    assert got == reference_put(payload_type, records, with_acq, max_batch)


def test_interleaved_cids_of_a_chunk_boundary_equal_the_reference() -> None:
    # More records than one encoding chunk (16384), cids interleaved as i % 10.
    payload_type = BytesPayloadType()
    records = [Record(Key(i % 10, i, i % 7, 10**12 + i), bytes(i % 5)) for i in range(40_000)]
    got = b"".join(encode_put(RecordCodec(payload_type), records, max_batch_size=5000))
    # The library encodes chunk by chunk: compare chunk-wise references.
    want = [
        reference_put(payload_type, records[a : a + 16384], False, 5000)[12:-4]
        for a in range(0, 40_000, 16384)
    ]
    assert got == struct.pack("<iQ", 5, 0) + b"".join(want) + struct.pack("<i", -1)


@pytest.mark.parametrize(
    "cycle",
    [
        [3, 1, 2],  # a cycle of distinct cids: grouped by slices (tail cut mid-cycle below)
        [0, 1, 1],  # a repeated cid inside the period: not a clean cycle
        [1, 0, 1, 0, 2],  # the cycle breaks at the end
        [5, 5, 4],
    ],
)
def test_cid_cycles_and_near_cycles_equal_the_reference(cycle: list[int]) -> None:
    payload_type = StructPayloadType("<d")
    cids = (cycle * 40)[:-1] if len(set(cycle)) == len(cycle) else cycle * 40
    records = [Record(Key(cid, i, 0, 10**12 + i), i / 2) for i, cid in enumerate(cids)]
    for max_batch in (2**31 - 1, 100):
        got = b"".join(encode_put(RecordCodec(payload_type), records, max_batch_size=max_batch))
        assert got == reference_put(payload_type, records, False, max_batch)


class _Int64Bytes(PayloadType[int]):
    """A payload type of its own: every value is 8 bytes (one-size bytes not the record's own)."""

    def to_bytes(self, value: int) -> bytes:
        return struct.pack("<q", value)

    def from_bytes(self, data: bytes) -> int:
        value: int = struct.unpack("<q", data)[0]
        return value


@pytest.fixture
def laid_out(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the chunks the word layout encoded (the put must not pass through the
    fallback only)."""
    calls: list[int] = []
    original = _codec._lay_out_rows

    def counting(records: list[Record[Any]], *args: Any) -> bytearray:
        calls.append(len(records))
        return original(records, *args)

    monkeypatch.setattr(_codec, "_lay_out_rows", counting)
    return calls


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([0, 4, 8, 100]),
    st.lists(CIDS, min_size=1, max_size=3, unique=True),
    st.booleans(),
    st.lists(st.tuples(I64, I32, I64, I64), min_size=32, max_size=300),
    st.booleans(),
    st.sampled_from([2**31 - 1, 4000, 10_000]),
    st.randoms(use_true_random=False),
)
def test_one_size_word_payloads_laid_out_equal_the_reference(
    size: int,
    cids: list[int],
    cycle: bool,
    keys: list[tuple[int, int, int, int]],
    with_acq: bool,
    max_batch: int,
    rnd: Any,
) -> None:
    # Payloads of one size that is a multiple of 4 are laid out by a join and strided
    # word copies of the key columns (one cid, or cids in a cycle, read with the cycle's
    # step): the extremes of every key field (negative int64s split into two words) and
    # several batches per cid must give the reference's bytes; so must any other order.
    records = [
        Record(
            Key(cids[i % len(cids)] if cycle else rnd.choice(cids), *fields), rnd.randbytes(size)
        )
        for i, fields in enumerate(keys)
    ]
    payload_type = BytesPayloadType()
    got = b"".join(
        encode_put(RecordCodec(payload_type), records, with_acq=with_acq, max_batch_size=max_batch)
    )
    assert got == reference_put(payload_type, records, with_acq, max_batch)


def test_the_word_layout_runs_for_one_size_payloads_and_not_for_others(
    laid_out: list[int],
) -> None:
    def encoded(payload_type: PayloadType[Any], values: list[Any], cids: int) -> bytes:
        # cids > 0: i % cids (one cid or a cycle); 0: the order 0, 0, 1, 0, 0, 1 (no cycle)
        records = [
            Record(
                Key(i % cids if cids else i % 3 // 2, -i, -(i % 7), 10**12 - i, -(2**63) + i), value
            )
            for i, value in enumerate(values)
        ]
        codec = RecordCodec(payload_type)
        seen = len(laid_out)
        got = b"".join(encode_put(codec, records, with_acq=True, max_batch_size=2**31 - 1))
        # The library encodes chunk by chunk: compare chunk-wise references (the chunks
        # the layout saw, or one chunk of them all).
        ends = list(accumulate(laid_out[seen:])) or [len(records)]
        want = [
            reference_put(payload_type, records[a:b], True, 2**31 - 1)[12:-4]
            for a, b in zip([0, *ends], ends, strict=False)
        ]
        assert got == struct.pack("<iQ", 6, 0) + b"".join(want) + struct.pack("<i", -1)
        return got

    count = 40_000  # several encoding chunks
    for cids in (1, 10):
        encoded(BytesPayloadType(), [bytes([i % 251]) * 100 for i in range(count)], cids)
        assert sum(laid_out) == count
        assert len(laid_out) > 2
        laid_out.clear()
    # The payload type's bytes, not the record's values:
    encoded(_Int64Bytes(), list(range(1000)), 3)
    encoded(BytesPayloadType(), [bytearray([i % 251]) * 100 for i in range(1000)], 1)
    assert laid_out == [1000, 1000]
    laid_out.clear()
    encoded(BytesPayloadType(), [bytes(102)] * 1000, 1)  # rows not of whole words
    encoded(BytesPayloadType(), [bytes(100)] * 1000, 1000)  # batches of one record
    encoded(BytesPayloadType(), [bytes(i % 2 * 4) for i in range(1000)], 1)  # two sizes
    encoded(BytesPayloadType(), [bytes(100)] * 1000, 0)  # cids in no cycle
    assert laid_out == []


def test_a_bad_key_among_laid_out_rows_ends_or_is_skipped_as_in_per_row_packing(
    laid_out: list[int],
) -> None:
    payload_type = BytesPayloadType()
    good = [Record(Key(1, i, 0, 10**12 + i), bytes(100)) for i in range(100)]
    for bad_key in (Key(1, 5, 2**31, 0), Key(1, 2**63, 0, 0), Key(1, 5, 0, -(2**63) - 1)):
        records = [*good, Record(bad_key, bytes(100)), *good]
        skipped = b"".join(encode_put(RecordCodec(payload_type), records, skip_invalid=True))
        assert skipped == reference_put(payload_type, good + good, False, 2**31 - 1)
        ended = b"".join(encode_put(RecordCodec(payload_type), records))
        assert ended == reference_put(payload_type, good, False, 2**31 - 1)
    assert laid_out  # the valid records were laid out after the bad one was found


@pytest.mark.parametrize(
    ("payload_type", "value", "row"),
    [(BytesPayloadType(), bytes(100), 124), (StructPayloadType("<d"), 0.5, 32)],
)
def test_put_chunks_hold_about_a_mebibyte_after_the_first(
    payload_type: PayloadType[Any], value: Any, row: int
) -> None:
    # The first chunk takes 16384 records; later ones as many as make about 1 MiB of wire
    # bytes (at most 16384): 100-byte payloads take fewer, small rows as many.
    count = 100_000
    records = [Record(Key(3, i, 0, i), value) for i in range(count)]
    bodies = list(
        RecordCodec(payload_type).encode_put_body(
            records, with_acq=False, max_batch_size=2**31 - 1, skip_invalid=False
        )
    )
    assert len(bodies[0]) == 8 + 16384 * row
    taken = [(len(body) - 8) // row for body in bodies]
    assert sum(taken) == count
    assert all(len(body) == 8 + n * row for body, n in zip(bodies, taken, strict=True))
    per_chunk = min(16384, (1 << 20) * 16384 // len(bodies[0]))
    assert taken[1:-1] == [per_chunk] * (len(taken) - 2)
    assert per_chunk < 16384 if row > 64 else per_chunk == 16384


def test_put_chunks_of_large_payloads_still_take_1024_records() -> None:
    # 4000-byte payloads would make ~260 records a MiB; a chunk takes at least 1024.
    row = 4 + 20 + 4000
    records = [Record(Key(0, i, 0, i), bytes(4000)) for i in range(16384 + 3000)]
    bodies = list(
        RecordCodec(BytesPayloadType()).encode_put_body(
            records, with_acq=False, max_batch_size=2**31 - 1, skip_invalid=False
        )
    )
    assert [(len(body) - 8) // row for body in bodies] == [16384, 1024, 1024, 952]
