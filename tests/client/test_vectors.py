"""The client core against every byte-exact case of tests/data/tstorage-vectors.json.

Requests: our encoders produce the vector bytes (where the encoding is unique) and the
vector bytes decode, with an independent reading of the spec, to the stated meaning.
Responses: our parsers turn the vector bytes (whole and byte by byte) into the stated
outcome, and the server-side encoders of the same core produce the vector bytes.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import pytest
from client_testkit import decode_request

from tstorage_client.payload_type import (
    BytesPayloadType,
    PayloadType,
    StructPayloadType,
    TuplePayloadType,
)
from tstorage_client.protocol import server as server_core
from tstorage_client.protocol._codec import RecordCodec
from tstorage_client.protocol.client import (
    NEED_DATA,
    AcqResponseParser,
    GetResponseParser,
    PutResponseParser,
    RecordsBatch,
    encode_get,
    encode_get_acq,
    encode_put,
)
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseStatus

_VECTORS_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "data", "tstorage-vectors.json"
)
with open(_VECTORS_PATH) as _file:
    CASES: list[dict[str, Any]] = json.load(_file)["cases"]

REQUESTS = [c for c in CASES if c["direction"] == "request" and c["meaning"]["type"] != "INVALID"]
INVALID = [c for c in CASES if c["direction"] == "request" and c["meaning"]["type"] == "INVALID"]
RESPONSES = [c for c in CASES if c["direction"] == "response"]

# Typed payload types by payload size, so the inlined-struct fast paths meet the vectors too.
_TYPED: dict[int, PayloadType[Any]] = {
    4: StructPayloadType("<i"),
    8: StructPayloadType("<d"),
    9: TuplePayloadType("<if?"),
}


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


def test_the_vector_file_is_the_one_the_protocol_doc_names() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "docs", "protocol.md")) as doc:
        assert "tests/data/tstorage-vectors.json" in doc.read()
    assert len(CASES) > 10


def _payload_types(payloads: list[bytes]) -> list[PayloadType[Any]]:
    """BytesPayloadType always; a typed one too when all payloads have one known size."""
    types: list[PayloadType[Any]] = [BytesPayloadType()]
    sizes = {len(p) for p in payloads}
    if len(sizes) == 1 and (size := sizes.pop()) in _TYPED:
        types.append(_TYPED[size])
    return types


def _value(payload_type: PayloadType[Any], payload: bytes) -> Any:
    return payload_type.from_bytes(payload)


def _meaning_records(meaning: dict[str, Any]) -> list[tuple[tuple[int, ...], bytes]]:
    return [(tuple(r["key"]), bytes.fromhex(r["payload_hex"])) for r in meaning["records"]]


def _by_cid(records: list[tuple[tuple[int, ...], bytes]]) -> dict[int, list[Any]]:
    """Records per cid in order: the only order the protocol preserves."""
    groups: dict[int, list[Any]] = {}
    for key, payload in records:
        groups.setdefault(key[0], []).append((key, payload))
    return groups


@pytest.mark.parametrize("case", REQUESTS, ids=_ids(REQUESTS))
def test_request_vector_decodes_to_its_meaning(case: dict[str, Any]) -> None:
    meaning = case["meaning"]
    request = decode_request(bytes.fromhex(case["hex"]))
    if meaning["type"] in ("GET", "GET_ACQ"):
        assert request.type == (1 if meaning["type"] == "GET" else 7)
        assert list(request.key_min or ()) == meaning["key_min"]
        assert list(request.key_max or ()) == meaning["key_max"]
    else:
        assert request.type == (5 if meaning["type"] == "PUT" else 6)
        assert _by_cid(request.records) == _by_cid(_meaning_records(meaning))


@pytest.mark.parametrize("case", REQUESTS, ids=_ids(REQUESTS))
def test_encoder_produces_request_vector(case: dict[str, Any]) -> None:
    meaning = case["meaning"]
    expected = bytes.fromhex(case["hex"])
    if meaning["type"] in ("GET", "GET_ACQ"):
        encode = encode_get if meaning["type"] == "GET" else encode_get_acq
        assert encode(Key(*meaning["key_min"]), Key(*meaning["key_max"])) == expected
        return
    records = _meaning_records(meaning)
    for payload_type in _payload_types([p for _, p in records]):
        typed = [Record(Key(*key), _value(payload_type, p)) for key, p in records]
        encoded = b"".join(
            encode_put(RecordCodec(payload_type), typed, with_acq=meaning["type"] == "PUTA")
        )
        if case["encoding_unique"]:
            assert encoded == expected, payload_type
        else:
            decoded = decode_request(encoded)
            assert _by_cid(decoded.records) == _by_cid(records), payload_type


@pytest.mark.parametrize("case", INVALID, ids=_ids(INVALID))
def test_invalid_request_vector_is_rejected_by_the_spec(case: dict[str, Any]) -> None:
    """Each invalid vector breaks a rule of the protocol document (a second reading of it)."""
    data = bytes.fromhex(case["hex"])
    try:
        request = decode_request(data)
    except (AssertionError, EOFError, struct.error):
        return  # malformed framing: n below key size, batch_bytes mismatch, truncation, type
    assert request.key_min is not None
    assert request.key_max is not None
    key_min, key_max = request.key_min, request.key_max
    empty_box = any(lo >= hi for lo, hi in zip(key_min, key_max, strict=True))
    assert key_min[0] < 0 or key_max[0] < 0 or empty_box


def _parse(parser: Any, data: bytes, step: int | None) -> tuple[list[Any], Any]:
    """Feed data (whole or in steps), then EOF; return (records, final response)."""
    records: list[Any] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in [*chunks, None]:
        if chunk is None:
            parser.feed_eof()
        else:
            parser.feed(chunk)
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, RecordsBatch):
                records.extend(event.records)
                continue
            return records, event
    raise AssertionError("no final response")


_STATUS = {name: ResponseStatus[name] for name in ("OK", "ERROR", "BAD_REQUEST")}


@pytest.mark.parametrize("step", [None, 1, 5])
@pytest.mark.parametrize("case", RESPONSES, ids=_ids(RESPONSES))
def test_parser_reads_response_vector(case: dict[str, Any], step: int | None) -> None:
    meaning = case["meaning"]
    data = bytes.fromhex(case["hex"])
    status = _STATUS[meaning["status"]]
    if meaning["type"] == "GET":
        records = _meaning_records(meaning)
        for payload_type in _payload_types([p for _, p in records]):
            got, final = _parse(GetResponseParser(RecordCodec(payload_type)), data, step)
            assert final.result == status
            assert got == [Record(Key(*k), _value(payload_type, p)) for k, p in records]
            if status == ResponseStatus.OK:
                assert final.acq == meaning["acq"]
    elif meaning["type"] == "PUT":
        _, final = _parse(PutResponseParser(), data, step)
        assert final.result == status
        if status == ResponseStatus.OK:
            assert (final.acq_min, final.acq_max) == (meaning["acq_min"], meaning["acq_max"])
    else:
        _, final = _parse(AcqResponseParser(), data, step)
        assert final.result == status
        assert final.acq == meaning["acq"]


@pytest.mark.parametrize("case", RESPONSES, ids=_ids(RESPONSES))
def test_server_encoders_produce_response_vector(case: dict[str, Any]) -> None:
    meaning = case["meaning"]
    status = meaning["status"]
    if meaning["type"] == "GET":
        if status == "BAD_REQUEST":
            encoded = server_core.encode_error()
        else:
            rows = [(*key, payload) for key, payload in _meaning_records(meaning)]
            head = server_core.encode_get_header() + server_core.encode_records(rows)
            tail = (
                server_core.encode_get_end(meaning["acq"])
                if status == "OK"
                else server_core.encode_get_failed_end()
            )
            encoded = head + tail
    elif meaning["type"] == "PUT":
        encoded = (
            server_core.encode_put_ok(meaning["acq_min"], meaning["acq_max"])
            if status == "OK"
            else server_core.encode_error()
        )
    else:
        encoded = server_core.encode_acq(meaning["acq"])
    assert encoded.hex() == case["hex"]
