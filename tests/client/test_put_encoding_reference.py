"""The put encoder against a plain reference encoder written here, record by record.

The library groups records by cid with buckets and packs rows through ``map``; this
reference does the obvious thing (a stable sort by cid, one ``struct.pack`` per record), so
the wire bytes of both must be identical for any valid input, cids interleaved or not.
"""

from __future__ import annotations

import struct
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
