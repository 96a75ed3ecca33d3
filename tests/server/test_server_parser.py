"""The server half of the sans-I/O core: request parsing and response encoding, no sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_raw import encode_get, encode_put, vectors

from tstorage_client.protocol.server import (
    MAX_ROWS_PER_EVENT,
    NEED_DATA,
    ConnectionClosed,
    GetAcqRequest,
    GetRequest,
    ProtocolError,
    PutaBatch,
    PutBatch,
    PutEnd,
    PutStart,
    RequestParser,
    encode_acq,
    encode_error,
    encode_get_end,
    encode_get_failed_end,
    encode_get_header,
    encode_put_ok,
    encode_records,
)
from tstorage_client.protocol.wire import MAX_PAYLOAD
from tstorage_client.record import Key

VECTORS = vectors()
INVALID = [name for name, case in VECTORS.items() if case["meaning"]["type"] == "INVALID"]


def parse(data: bytes, chunk: int | None = None, eof: bool = True) -> list[object]:
    """All events for ``data`` fed in ``chunk``-sized pieces (whole when None)."""
    parser = RequestParser()
    events: list[object] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in [*pieces, b""] if eof else pieces:
        parser.receive_data(piece)
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, ProtocolError | ConnectionClosed):
                return events
    return events


def records_of(events: list[object]) -> list[tuple[tuple[int, ...], bytes]]:
    """Flatten PUT / PUTA batches into ((cid, mid, moid, cap, acq), payload) pairs."""
    out = []
    for event in events:
        if isinstance(event, PutBatch):
            out += [((event.cid, m, o, c, -1), p) for _, m, o, c, p in event.rows]
        elif isinstance(event, PutaBatch):
            out += [((event.cid, m, o, c, a), p) for _, m, o, c, a, p in event.rows]
    return out


def expected_records(case: dict) -> list[tuple[tuple[int, ...], bytes]]:
    return [(tuple(r["key"]), bytes.fromhex(r["payload_hex"])) for r in case["meaning"]["records"]]


@pytest.mark.parametrize(
    "name",
    [
        n
        for n, c in VECTORS.items()
        if c["direction"] == "request" and c["meaning"]["type"] in ("PUT", "PUTA")
    ],
)
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_put_vectors_decode_to_their_records(name: str, chunk: int | None) -> None:
    case = VECTORS[name]
    events = parse(bytes.fromhex(case["hex"]), chunk)
    assert events[0] == PutStart(with_acq=case["meaning"]["type"] == "PUTA")
    assert isinstance(events[-2], PutEnd)
    assert isinstance(events[-1], ConnectionClosed)
    assert records_of(events) == expected_records(case)


@pytest.mark.parametrize("name", ["get_small_box", "get_acq_full_range"])
@pytest.mark.parametrize("chunk", [None, 1])
def test_range_vectors_decode_to_their_keys(name: str, chunk: int | None) -> None:
    case = VECTORS[name]
    events = parse(bytes.fromhex(case["hex"]), chunk)
    kind = GetRequest if case["meaning"]["type"] == "GET" else GetAcqRequest
    assert events == [
        kind(Key(*case["meaning"]["key_min"]), Key(*case["meaning"]["key_max"])),
        ConnectionClosed(),
    ]


@pytest.mark.parametrize("name", [n for n in INVALID if n.startswith(("put", "unknown"))])
@pytest.mark.parametrize("chunk", [None, 1])
def test_malformed_request_vectors_give_one_protocol_error(name: str, chunk: int | None) -> None:
    # Well-formed records before the fault may be handed out; the request still fails as a
    # whole (the server then rolls the PUT back).
    events = parse(bytes.fromhex(VECTORS[name]["hex"]), chunk)
    assert isinstance(events[-1], ProtocolError)
    assert sum(isinstance(e, ProtocolError) for e in events) == 1


def test_record_size_above_the_limit_fails_before_any_payload_arrives() -> None:
    parser = RequestParser()
    huge = 20 + MAX_PAYLOAD + 1
    parser.receive_data(struct.pack("<iQ", 5, 0) + struct.pack("<iii", 1, huge + 4, huge))
    assert parser.next_event() == PutStart(with_acq=False)
    event = parser.next_event()
    assert isinstance(event, ProtocolError)
    assert "outside" in event.reason
    assert parser.buffered == 0


def test_record_larger_than_its_batch_fails_before_buffering() -> None:
    parser = RequestParser()
    parser.receive_data(struct.pack("<iQ", 5, 0) + struct.pack("<iii", 1, 30, 1000))
    parser.next_event()
    event = parser.next_event()
    assert isinstance(event, ProtocolError)
    assert "overruns its batch" in event.reason


def test_largest_allowed_record_waits_for_its_bytes_and_then_parses() -> None:
    payload = bytes(MAX_PAYLOAD)
    data = encode_put([((1, 2, 3, 4, -1), payload)])
    parser = RequestParser()
    parser.receive_data(data[:100])
    assert parser.next_event() == PutStart(with_acq=False)
    assert parser.next_event() is NEED_DATA
    parser.receive_data(data[100:])
    batch = parser.next_event()
    assert isinstance(batch, PutBatch)
    assert batch.rows == [(20 + MAX_PAYLOAD, 2, 3, 4, payload)]
    assert parser.next_event() == PutEnd()


@pytest.mark.parametrize(("rtype", "size"), [(1, 63), (7, 65), (1, 2**63), (5, 8), (6, 1)])
def test_header_with_a_wrong_size_is_refused_without_waiting(rtype: int, size: int) -> None:
    events = parse(struct.pack("<iQ", rtype, size), eof=False)
    assert len(events) == 1
    assert isinstance(events[0], ProtocolError)


def test_negative_batch_bytes_is_refused() -> None:
    events = parse(struct.pack("<iQ", 5, 0) + struct.pack("<ii", 1, -8), eof=False)
    assert isinstance(events[-1], ProtocolError)


def test_truncated_get_is_a_protocol_error_at_end_of_input() -> None:
    assert isinstance(parse(encode_get()[:40])[-1], ProtocolError)


def test_many_empty_batches_do_not_recurse() -> None:
    data = struct.pack("<iQ", 5, 0) + struct.pack("<ii", 1, 0) * 100_000 + struct.pack("<i", -1)
    events = parse(data)
    assert events == [PutStart(with_acq=False), PutEnd(), ConnectionClosed()]


def test_parser_fails_permanently_after_an_error() -> None:
    parser = RequestParser()
    parser.receive_data(bytes.fromhex(VECTORS["unknown_request_type"]["hex"]))
    first = parser.next_event()
    parser.receive_data(encode_get())
    assert isinstance(first, ProtocolError)
    assert parser.next_event() == first


def test_requests_follow_each_other_on_one_stream() -> None:
    data = encode_put([((1, 2, 3, 4, -1), b"x")]) + encode_get() + encode_put([], with_acq=True)
    kinds = [type(event) for event in parse(data)]
    assert kinds == [PutStart, PutBatch, PutEnd, GetRequest, PutStart, PutEnd, ConnectionClosed]


def test_one_batch_is_handed_out_in_bounded_pieces() -> None:
    count = MAX_ROWS_PER_EVENT * 2 + 5
    events = parse(encode_put([((1, 0, 0, i, -1), b"12345678") for i in range(count)]))
    batches = [e for e in events if isinstance(e, PutBatch)]
    assert all(len(b.rows) <= MAX_ROWS_PER_EVENT for b in batches)
    assert [key[3] for key, _ in records_of(events)] == list(range(count))


record_strategy = st.tuples(
    st.tuples(
        st.integers(0, 2**31 - 1),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-(2**63), 2**63 - 1),
    ),
    st.binary(max_size=40),
)


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(record_strategy, max_size=30),
    with_acq=st.booleans(),
    chunk=st.integers(1, 200),
)
def test_any_put_stream_round_trips_in_any_chunking(records, with_acq: bool, chunk: int) -> None:
    # A batch with one cid and identical payload sizes takes the fast path; mixed ones do not.
    events = parse(encode_put(records, with_acq), chunk)
    expected = [((k[0], k[1], k[2], k[3], k[4] if with_acq else -1), p) for k, p in records]
    assert records_of(events) == expected
    assert isinstance(events[-2], PutEnd)


def test_uniform_run_with_one_odd_record_falls_back_and_parses_all() -> None:
    records = [((1, 0, 0, i, -1), b"abcd") for i in range(50)]
    records[25] = ((1, 0, 0, 25, -1), b"abcdefgh")
    body = encode_put(records)
    # Re-encode as one batch of cid 1 so the fast path meets the odd record mid-run.
    recs = b"".join(struct.pack("<iqiq", 20 + len(p), k[1], k[2], k[3]) + p for k, p in records)
    data = (
        struct.pack("<iQ", 5, 0) + struct.pack("<ii", 1, len(recs)) + recs + struct.pack("<i", -1)
    )
    assert records_of(parse(data)) == records_of(parse(body))
    assert records_of(parse(data)) == records


def test_encoders_produce_the_response_vectors() -> None:
    two = VECTORS["get_response_two_records"]["meaning"]
    rows = [(*r["key"], bytes.fromhex(r["payload_hex"])) for r in two["records"]]
    assert (
        encode_get_header() + encode_records(rows) + encode_get_end(two["acq"])
    ).hex() == VECTORS["get_response_two_records"]["hex"]
    assert (encode_get_header() + encode_get_end(42)).hex() == VECTORS["get_response_empty"]["hex"]
    assert encode_error().hex() == VECTORS["get_response_refused_first_header"]["hex"]
    one = VECTORS["get_response_error_after_records"]["meaning"]["records"][0]
    assert (
        encode_get_header()
        + encode_records([(*one["key"], bytes.fromhex(one["payload_hex"]))])
        + encode_get_failed_end()
    ).hex() == VECTORS["get_response_error_after_records"]["hex"]
    assert encode_put_ok(1000, 1005).hex() == VECTORS["put_response_ok"]["hex"]
    assert encode_error().hex() == VECTORS["put_response_error"]["hex"]
    assert encode_acq(15).hex() == VECTORS["get_acq_response"]["hex"]
