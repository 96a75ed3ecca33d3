"""NumpyPayloadType as the reference client has it: constructor forms, dtypes, shapes."""

from __future__ import annotations

from typing import Any

import numpy
import pytest
from compat_kit import call, connected, items_of

from tstorage_client.payload_type import NumpyPayloadType
from tstorage_client.record import Key
from tstorage_server.testing import RunningServer

K = [
    ("cid", numpy.int32),
    ("mid", numpy.int64),
    ("moid", numpy.int32),
    ("cap", numpy.int64),
    ("acq", numpy.int64),
]
SIZE = [("_size", numpy.int32)]


@pytest.mark.parametrize(
    ("form", "fields"),
    [
        (None, []),
        ([], []),
        ([("a", numpy.int16), ("b", numpy.float64)], [("a", numpy.int16), ("b", numpy.float64)]),
        (numpy.dtype([("a", numpy.int16), ("b", "<f4")]), [("a", numpy.int16), ("b", "<f4")]),
        (numpy.int32, [("v0", numpy.int32)]),
        (numpy.dtype("<f8"), [("v0", numpy.float64)]),
    ],
    ids=["none", "empty-list", "pairs", "structured-dtype", "scalar-type", "scalar-dtype"],
)
def test_constructor_forms_give_the_four_dtypes(form: Any, fields: list[Any]) -> None:
    payload = NumpyPayloadType(form)
    assert payload.parsing_dtype == numpy.dtype(SIZE + K + fields)
    assert payload.record_dtype == numpy.dtype(K + fields)
    assert payload.serializer_dtype_with_acq == numpy.dtype(SIZE + K[1:] + fields)
    assert payload.serializer_dtype_no_acq == numpy.dtype(SIZE + K[1:-1] + fields)
    assert payload.parsing_dtype.itemsize == 36 + payload.fixed_size


async def test_the_documented_row_is_accepted_by_puta_and_read_back(
    server: RunningServer, channel_class: type[Any]
) -> None:
    pt = NumpyPayloadType(numpy.int32)
    row = numpy.array([(0, 78, 47, 0, 123, 153, 0)], pt.parsing_dtype)
    assert (row["_size"][0], row["cid"][0], row["acq"][0], row["v0"][0]) == (0, 78, 153, 0)
    channel = await connected(channel_class, server, pt)
    assert (await call(channel.puta(row))).is_ok()
    got = await call(channel.get(Key(78, 0, 0, 0, 0), Key(79, 100, 100, 1000, 1000)))
    assert got.is_ok()
    assert isinstance(got.data, list)
    assert all(chunk.dtype == pt.parsing_dtype for chunk in got.data)
    joined = numpy.concatenate(got.data)  # the vendor's example
    assert joined[["cid", "mid", "moid", "cap", "acq", "v0"]].tolist() == [(78, 47, 0, 123, 153, 0)]
    await call(channel.close())


async def test_put_of_a_dict_of_arrays_and_get_stream_arrays(
    server: RunningServer, channel_class: type[Any]
) -> None:
    pt = NumpyPayloadType([("x", numpy.int16), ("y", numpy.float32)])
    channel = await connected(channel_class, server, pt, memory_limit=(36 + 6) * 4)
    count = 10
    columns = {
        "cid": numpy.array([5, 4] * 5),
        "mid": numpy.arange(count),
        "moid": numpy.zeros(count, numpy.int32),
        "cap": numpy.arange(count) + 1,
        "x": numpy.arange(count, dtype=numpy.int16),
        "y": numpy.arange(count, dtype=numpy.float32) / 2,
    }
    assert (await call(channel.put(columns))).is_ok()
    chunks: list[Any] = []
    final = await call(
        channel.get_stream(Key(4, 0, 0, 0, 0), Key(6, 99, 9, 99, 2**62), chunks.append)
    )
    assert final.is_ok()
    assert all(isinstance(c, numpy.ndarray) and c.dtype == pt.parsing_dtype for c in chunks)
    assert all(0 < len(c) <= 4 for c in chunks)
    joined = numpy.concatenate(chunks)
    assert joined["cid"].tolist() == [4] * 5 + [5] * 5  # grouped by cid
    assert sorted(joined["x"].tolist()) == list(range(count))
    await call(channel.close())


async def test_a_recarray_with_any_size_field_and_no_payload_fields(
    server: RunningServer, channel_class: type[Any]
) -> None:
    pt = NumpyPayloadType(None)
    rows = numpy.rec.array([(99, 3, 1, 0, 7, -1)], dtype=pt.parsing_dtype)
    channel = await connected(channel_class, server, pt)
    assert (await call(channel.put(rows))).is_ok()
    got = await call(channel.get(Key(3, 0, 0, 0, 0), Key(4, 9, 9, 9, 2**62)))
    assert numpy.concatenate(got.data)[["cid", "mid", "cap"]].tolist() == [(3, 1, 7)]
    assert numpy.concatenate(got.data)["_size"].tolist() == [32]
    await call(channel.close())


async def test_get_iter_yields_records_with_python_values(
    server: RunningServer, channel_class: type[Any]
) -> None:
    one, two = NumpyPayloadType(numpy.float64), NumpyPayloadType([("a", "<i2"), ("b", "<f4")])
    assert one.from_bytes(one.to_bytes(1.5)) == 1.5
    assert one.to_bytes((1.5,)) == one.to_bytes(1.5)
    assert two.from_bytes(two.to_bytes((3, 0.5))) == (3, 0.5)
    assert one.from_bytes(b"\0" * 7) is None
    channel = await connected(channel_class, server, two)
    rows = numpy.array([(0, 8, 1, 0, 5, 0, 3, 0.5)], two.parsing_dtype)
    assert (await call(channel.puta(rows))).is_ok()
    items = await items_of(channel.get_iter(Key(8, 0, 0, 0, 0), Key(9, 9, 9, 9, 2**62)))
    assert [(r.key.mid, r.value) for r in items[:-1]] == [(1, (3, 0.5))]
    assert items[-1].is_ok()
    await call(channel.close())
