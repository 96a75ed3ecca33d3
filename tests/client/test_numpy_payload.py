"""NumpyPayloadType: structured arrays in and out, over both channels and in the core."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from client_testkit import decode_request, get_response
from test_core_properties import _parse_split

from tstorage_client.payload_type import NumpyPayloadType
from tstorage_client.protocol.client import GetResponseParser, encode_put
from tstorage_client.protocol.codecs import codec_for
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseStatus
from tstorage_server.testing import serve

PUT_FIELDS = [("cid", "<i4"), ("mid", "<i8"), ("moid", "<i4"), ("cap", "<i8")]


def _array(count: int, cids: int = 3) -> np.ndarray[Any, Any]:
    array = np.zeros(count, dtype=[*PUT_FIELDS, ("v0", "<f8")])
    array["cid"] = np.arange(count) % cids
    array["mid"] = np.arange(count)
    array["moid"] = 7
    array["cap"] = 1000 + np.arange(count)
    array["v0"] = np.arange(count) / 4
    return array


def test_payload_type_is_exposed_by_payload_type_module() -> None:
    from tstorage_client import payload_type

    assert payload_type.NumpyPayloadType is NumpyPayloadType


def test_structured_payload_dtype_gives_flat_record_dtype() -> None:
    payload = NumpyPayloadType([("x", "<i4"), ("y", "<f4")])
    assert payload.record_dtype.names == ("cid", "mid", "moid", "cap", "acq", "x", "y")
    assert payload.parsing_dtype.names == ("_size", *payload.record_dtype.names)
    assert payload.parsing_dtype.itemsize == 4 + 32 + 8
    assert payload.fixed_size == 8
    assert payload.from_bytes(payload.to_bytes((3, 1.5))) == (3, 1.5)
    with pytest.raises(ValueError, match="clash"):
        NumpyPayloadType([("cid", "<i4")])


def test_array_put_encodes_like_records() -> None:
    payload = NumpyPayloadType("<f8")
    array = _array(50)
    codec = codec_for(payload)
    from_array = decode_request(b"".join(encode_put(codec, array, max_batch_size=200)))
    records = [
        Record(Key(int(r["cid"]), int(r["mid"]), int(r["moid"]), int(r["cap"])), float(r["v0"]))
        for r in array
    ]
    from_records = decode_request(b"".join(encode_put(codec, records, max_batch_size=200)))
    assert from_array.batches == from_records.batches
    assert all(b.batch_bytes <= 200 for b in from_array.batches)


def test_invalid_rows_end_the_put_or_are_skipped() -> None:
    codec = codec_for(NumpyPayloadType("<f8"))
    columns = {
        "cid": np.array([1, 2, -1, 3]),
        "mid": np.arange(4),
        "moid": np.array([0, 0, 0, 2**40]),
        "cap": np.arange(4),
        "v0": np.ones(4),
    }
    ended = decode_request(b"".join(encode_put(codec, columns)))
    assert [key[0] for key, _ in ended.records] == [1, 2]
    skipped = decode_request(b"".join(encode_put(codec, columns, skip_invalid=True)))
    assert [key[0] for key, _ in skipped.records] == [1, 2]  # moid 2**40 is out of range too


def test_put_input_errors_are_reported() -> None:
    codec = codec_for(NumpyPayloadType("<f8"))
    with pytest.raises(ValueError, match="lacks"):
        b"".join(encode_put(codec, {"cid": np.arange(2)}))
    columns = {name: np.arange(3) for name in ("cid", "mid", "moid", "cap", "v0")}
    columns["cap"] = np.arange(2)
    with pytest.raises(ValueError, match="length"):
        b"".join(encode_put(codec, columns))


def test_get_response_parses_into_structured_array_whatever_the_split() -> None:
    payload = NumpyPayloadType("<f8")
    rows = [((1, i, 2, 3, 4 + i), np.float64(i / 2).tobytes()) for i in range(300)]
    parser = GetResponseParser(codec_for(payload), memory_limit=44 * 50)
    batches, final = _parse_split(parser, get_response(rows, 9), [1, 77, 5000])
    assert final.status == ResponseStatus.OK
    assert final.acq == 9
    assert all(b.records.dtype == payload.parsing_dtype for b in batches)
    data = np.concatenate([b.records for b in batches])
    assert data["mid"].tolist() == list(range(300))
    assert data["v0"].tolist() == [i / 2 for i in range(300)]
    assert set(data["_size"].tolist()) == {40}
    assert all(len(b.records) <= 50 for b in batches)


def test_payload_of_the_wrong_size_is_unparseable() -> None:
    parser = GetResponseParser(codec_for(NumpyPayloadType("<f8")))
    _, final = _parse_split(parser, get_response([((1, 1, 1, 1, 1), b"abc")], 1), [])
    assert final.status == ResponseStatus.UNPARSEABLE_ENTITY


async def test_numpy_round_trip_over_both_channels(make_client: Any) -> None:
    payload = NumpyPayloadType("<f8")
    with serve(memory=True) as server:
        client = make_client(server.host, server.port, payload, memory_limit=44 * 1000)
        await client.connect()
        array = _array(5000)
        put = await client.put(array)
        assert put.is_ok()
        # get() of more than memory_limit fails; get_stream delivers arrays within it.
        assert (await client.get()).status == ResponseStatus.NO_MEMORY
        await client.connect()
        batches: list[Any] = []
        assert (await client.get_stream(batches.append)).is_ok()
        assert all(isinstance(b, np.ndarray) and len(b) <= 1000 for b in batches)
        got = np.concatenate(batches)
        assert sorted(got["mid"].tolist()) == list(range(5000))
        by_mid = got[np.argsort(got["mid"])]
        assert by_mid["v0"].tolist() == array["v0"].tolist()
        assert by_mid["cid"].tolist() == array["cid"].tolist()
        records, iterator = await client.get_iter(Key(1, 0, 0, 0, 0), Key(2, 10, 8, 10**6, 2**62))
        assert iterator.response.is_ok()
        assert [(r.key.mid, r.value) for r in records] == [(1, 0.25), (4, 1.0), (7, 1.75)]
        await client.close()


async def test_numpy_puta_with_dict_and_get_whole(make_client: Any) -> None:
    payload = NumpyPayloadType([("x", "<i4"), ("y", "<f4")])
    with serve(memory=True) as server:
        client = make_client(server.host, server.port, payload)
        await client.connect()
        columns = {
            "cid": [4, 4],
            "mid": [1, 2],
            "moid": [0, 0],
            "cap": [5, 6],
            "acq": [70, 71],
            "x": [1, 2],
            "y": [0.5, 1.5],
        }
        assert (await client.puta(columns)).is_ok()
        got = await client.get()
        assert isinstance(got.data, list)
        assert np.concatenate(got.data).tolist() == [
            (40, 4, 1, 0, 5, 70, 1, 0.5),
            (40, 4, 2, 0, 6, 71, 2, 1.5),
        ]
        await client.close()
