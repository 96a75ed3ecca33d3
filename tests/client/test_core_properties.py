"""Property tests of the sans-I/O client core (hypothesis).

- any valid records survive encode_put -> (independent) decode, per cid in order, in
  batches that respect max_batch_size;
- any records survive the GET response encoding -> GetResponseParser, however the bytes
  are split, in batches that respect memory_limit;
- arbitrary bytes never make a parser raise: it ends with a status, buffering only
  what it was fed.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

from client_testkit import decode_request, get_response, put_ok
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tstorage_client.payload_type import (
    BytesPayloadType,
    PayloadType,
    StructPayloadType,
    TuplePayloadType,
)
from tstorage_client.protocol._codec import RecordCodec
from tstorage_client.protocol.client import (
    NEED_DATA,
    AcqResponseParser,
    GetResponseParser,
    PutResponseParser,
    RecordsBatch,
    encode_put,
)
from tstorage_client.record import Key, Record
from tstorage_client.response import Response, ResponseStatus

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
CID = st.integers(0, 5) | st.integers(0, 2**31 - 1)

KEYS = st.builds(Key, CID, I64, I32, I64, I64)


def _payload_case() -> st.SearchStrategy[tuple[PayloadType[Any], st.SearchStrategy[Any]]]:
    floats = st.floats(allow_nan=False)
    f32 = st.floats(width=32, allow_nan=False)
    return st.sampled_from(
        [
            (StructPayloadType("<d"), floats),
            (TuplePayloadType("<if?"), st.tuples(I32, f32, st.booleans())),
            (BytesPayloadType(), st.binary(max_size=64)),
        ]
    )


@st.composite
def record_sets(draw: st.DrawFn) -> tuple[PayloadType[Any], list[Record[Any]]]:
    payload_type, values = draw(_payload_case())
    records = draw(st.lists(st.builds(Record, KEYS, values), max_size=60))
    return payload_type, records


def _by_cid(records: list[tuple[tuple[int, ...], Any]]) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = {}
    for key, value in records:
        groups.setdefault(key[0], []).append((tuple(key), value))
    return groups


@settings(max_examples=150, deadline=None)
@given(record_sets(), st.booleans(), st.integers(1, 600))
def test_put_encoding_round_trips_any_valid_records(
    case: tuple[PayloadType[Any], list[Record[Any]]], with_acq: bool, max_batch_size: int
) -> None:
    payload_type, records = case
    data = b"".join(
        encode_put(
            RecordCodec(payload_type), records, with_acq=with_acq, max_batch_size=max_batch_size
        )
    )
    request = decode_request(data)
    assert request.type == (6 if with_acq else 5)
    expected = [
        ((k.cid, k.mid, k.moid, k.cap, k.acq if with_acq else -1), payload_type.to_bytes(v))
        for k, v in ((r.key, r.value) for r in records)
    ]
    assert _by_cid(request.records) == _by_cid(expected)
    for batch in request.batches:
        assert batch.batch_bytes <= max_batch_size or len(batch.records) == 1


def _parse_split(parser: Any, data: bytes, cuts: list[int]) -> tuple[list[RecordsBatch], Any]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    batches: list[RecordsBatch] = []
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    for piece in [*pieces, None]:
        if piece is None:
            parser.feed_eof()
        else:
            parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, RecordsBatch):
                batches.append(event)
            else:
                return batches, event
    raise AssertionError("the parser gave no final response after EOF")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_sets(), I64, st.lists(st.integers(0, 10_000), max_size=8), st.integers(40, 400))
def test_get_response_parses_any_records_however_split(
    case: tuple[PayloadType[Any], list[Record[Any]]],
    acq: int,
    cuts: list[int],
    memory_limit: int,
) -> None:
    payload_type, records = case
    wire_records = [(tuple(r.key), payload_type.to_bytes(r.value)) for r in records]
    data = get_response(wire_records, acq)
    parser = GetResponseParser(RecordCodec(payload_type), memory_limit)
    batches, final = _parse_split(parser, data, cuts)
    largest = max((36 + len(p) for _, p in wire_records), default=0)
    if largest > memory_limit:
        assert final.result == ResponseStatus.NO_MEMORY
        return
    assert final.result == ResponseStatus.OK
    assert final.acq == acq
    got = [record for batch in batches for record in batch.records]
    assert got == [Record(Key(*k), payload_type.from_bytes(p)) for k, p in wire_records]
    assert all(0 < batch.nbytes <= memory_limit for batch in batches)


PARSERS = st.sampled_from(["get", "put", "acq"])


def _make(kind: str, memory_limit: int) -> Any:
    if kind == "get":
        return GetResponseParser(RecordCodec(StructPayloadType("<d")), memory_limit)
    return PutResponseParser() if kind == "put" else AcqResponseParser()


_GET_PREFIX = struct.pack("<iQ", 0, 0)


@settings(max_examples=300, deadline=None)
@given(PARSERS, st.binary(max_size=300), st.booleans(), st.lists(st.integers(0, 300), max_size=5))
def test_arbitrary_bytes_end_in_a_status_never_an_exception(
    kind: str, garbage: bytes, after_ok_header: bool, cuts: list[int]
) -> None:
    data = (_GET_PREFIX if after_ok_header else b"") + garbage
    parser = _make(kind, 1 << 20)
    batches, final = _parse_split(parser, data, cuts)
    assert isinstance(final, Response)
    assert final.result in set(ResponseStatus)
    assert parser.next_event() is final  # the outcome is stable
    assert sum(b.nbytes for b in batches) <= len(data)


def _first_event(parser: Any, data: bytes) -> Any:
    parser.feed(data)
    event = parser.next_event()
    while isinstance(event, RecordsBatch):
        event = parser.next_event()
    return event


def test_huge_record_size_fails_before_buffering() -> None:
    # n = 2^31-1 announces 2 GiB: the parser must refuse at once, not wait for the bytes.
    parser = _make("get", 1 << 40)
    event = _first_event(parser, _GET_PREFIX + struct.pack("<i", 2**31 - 1))
    assert event.result == ResponseStatus.UNPARSEABLE_ENTITY


def test_record_beyond_memory_limit_fails_before_buffering() -> None:
    parser = _make("get", 1000)
    event = _first_event(parser, _GET_PREFIX + struct.pack("<i", 5000))
    assert event.result == ResponseStatus.NO_MEMORY


def test_record_size_below_key_size_is_unparseable() -> None:
    event = _first_event(_make("get", 1000), _GET_PREFIX + struct.pack("<i", 31) + bytes(40))
    assert event.result == ResponseStatus.UNPARSEABLE_ENTITY


def test_wrong_size_in_headers_is_unparseable() -> None:
    assert _first_event(_make("put", 0), struct.pack("<iQ", 0, 2**63)).result == (
        ResponseStatus.UNPARSEABLE_ENTITY
    )
    assert _first_event(_make("acq", 0), struct.pack("<iQ", 0, 7)).result == (
        ResponseStatus.UNPARSEABLE_ENTITY
    )
    assert _first_event(_make("get", 100), struct.pack("<iQ", 0, 99)).result == (
        ResponseStatus.UNPARSEABLE_ENTITY
    )


def test_payload_the_payload_type_rejects_is_unparseable() -> None:
    # StructPayloadType("<d") cannot decode a 3-byte payload.
    data = get_response([((1, 2, 3, 4, 5), b"abc")], 9)
    parser = GetResponseParser(RecordCodec(StructPayloadType("<d")))
    assert _first_event(parser, data).result == ResponseStatus.UNPARSEABLE_ENTITY


def test_end_of_input_mid_response_is_disconnected() -> None:
    for parser, data in [
        (_make("get", 1000), get_response([((1, 2, 3, 4, 5), bytes(8))], 9)[:-3]),
        (_make("put", 0), put_ok(1, 2)[:-1]),
        (_make("acq", 0), b""),
    ]:
        _, final = _parse_split(parser, data, [])
        assert final.result == ResponseStatus.DISCONNECTED


def test_records_of_mixed_sizes_decode_in_order() -> None:
    # Exercises run boundaries: each size change ends a struct run.
    records = [((1, i, 0, 0, 0), bytes(i % 4)) for i in range(200)]
    parser = GetResponseParser(RecordCodec(BytesPayloadType()))
    batches, final = _parse_split(parser, get_response(records, 1), [])
    assert final.result == ResponseStatus.OK
    got = [(tuple(r.key), r.value) for b in batches for r in b.records]
    assert got == records


def test_discarding_parser_skips_records_and_still_reads_the_status() -> None:
    records = [((1, i, 0, 0, 0), bytes(8)) for i in range(1000)]
    parser = GetResponseParser(RecordCodec(StructPayloadType("<d")))
    parser.discard = True
    batches, final = _parse_split(parser, get_response(records, 77), [100, 5000])
    assert batches == []
    assert (final.result, final.acq) == (ResponseStatus.OK, 77)
