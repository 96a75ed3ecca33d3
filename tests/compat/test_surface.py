"""The reference client's public names, signatures and defaults, read with ``inspect``."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import ssl
from typing import Any

import pytest

import tstorage_client
from tstorage_client.channel import Channel
from tstorage_client.channel_async import AsyncChannel

EMPTY = inspect.Parameter.empty
POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
KEYWORD = inspect.Parameter.KEYWORD_ONLY

MODULES = {
    "channel": ["Channel"],
    "channel_async": ["AsyncChannel"],
    "payload_type": [
        "PayloadType",
        "StructPayloadType",
        "TuplePayloadType",
        "UnitPayloadType",
        "BytesPayloadType",
        "NumpyPayloadType",
    ],
    "record": ["Key", "Record"],
    "records_set": ["RecordsSet", "GetCallback"],
    "response": ["ResponseStatus", "Response", "ResponseAcq", "ResponseGet"],
    "timestamp": [
        "Tstoragedatetime",
        "to_unix",
        "to_unix_ns",
        "from_unix",
        "from_unix_ns",
        "now",
        "now_ns",
    ],
}


def params(function: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of every parameter but self."""
    signature = inspect.signature(function)
    return [(p.name, p.kind, p.default) for p in signature.parameters.values() if p.name != "self"]


@pytest.mark.parametrize(("module", "names"), MODULES.items())
def test_every_module_holds_its_names(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(f"tstorage_client.{module}")
    for name in names:
        assert hasattr(loaded, name), f"tstorage_client.{module}.{name}"
    if module == "payload_type":  # numpy is installed in the test environment
        assert "NumpyPayloadType" in loaded.__all__


def test_the_package_root_exports_every_public_name() -> None:
    everything = [name for names in MODULES.values() for name in names]
    for name in everything:
        assert name in tstorage_client.__all__, name
        module = next(m for m, names in MODULES.items() if name in names)
        expected = getattr(importlib.import_module(f"tstorage_client.{module}"), name)
        assert getattr(tstorage_client, name) is expected
    namespace: dict[str, Any] = {}
    exec("from tstorage_client import *", namespace)
    assert set(everything) <= set(namespace)


def test_channel_signature_positional_order_and_defaults() -> None:
    assert params(Channel)[:6] == [
        ("host", POSITIONAL, EMPTY),
        ("port", POSITIONAL, EMPTY),
        ("payload_type", POSITIONAL, EMPTY),
        ("timeout", POSITIONAL, None),
        ("memory_limit", POSITIONAL, None),
        ("ssl_context", POSITIONAL, None),
    ]
    extras = params(Channel)[6:]
    assert {name for name, _, _ in extras} >= {"max_batch_size", "connect_timeout"}
    assert all(kind is KEYWORD for _, kind, _ in extras)


def test_async_channel_signature_is_real_and_has_no_timeout_positional() -> None:
    parameters = params(AsyncChannel)
    assert all(
        kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for _, kind, _ in parameters
    )
    assert parameters[:5] == [
        ("host", POSITIONAL, EMPTY),
        ("port", POSITIONAL, EMPTY),
        ("payload_type", POSITIONAL, EMPTY),
        ("memory_limit", POSITIONAL, None),
        ("ssl_context", POSITIONAL, None),
    ]
    extras = parameters[5:]
    assert "timeout" in {name for name, _, _ in extras}
    assert all(kind is KEYWORD for _, kind, _ in extras)


def test_a_positional_ssl_context_lands_in_ssl_context() -> None:
    context = ssl.create_default_context()
    from tstorage_client.payload_type import BytesPayloadType

    channel = Channel("h", 1, BytesPayloadType(), 5.0, 1000, context)
    assert (channel.timeout, channel.memory_limit, channel.ssl_context) == (5.0, 1000, context)
    achannel = AsyncChannel("h", 1, BytesPayloadType(), 1000, context)
    assert (achannel.memory_limit, achannel.ssl_context) == (1000, context)


@pytest.mark.parametrize("cls", [Channel, AsyncChannel])
def test_request_method_signatures(cls: type[Any]) -> None:
    limit = 2147483647
    for name in ("put", "puta"):
        assert params(getattr(cls, name)) == [
            ("data", POSITIONAL, EMPTY),
            ("max_batch_size", POSITIONAL, limit),
            ("skip_invalid", POSITIONAL, False),
        ]
    assert params(cls.get_acq) == [("key_min", POSITIONAL, EMPTY), ("key_max", POSITIONAL, EMPTY)]
    for name in ("get", "get_iter"):
        assert params(getattr(cls, name)) == [
            ("key_min", POSITIONAL, EMPTY),
            ("key_max", POSITIONAL, EMPTY),
            ("recv_buffer_size", POSITIONAL, 65536),
        ]
    assert params(cls.get_stream) == [
        ("key_min", POSITIONAL, EMPTY),
        ("key_max", POSITIONAL, EMPTY),
        ("callback", POSITIONAL, EMPTY),
        ("recv_buffer_size", POSITIONAL, 65536),
    ]
    for name in ("connect", "close"):
        assert params(getattr(cls, name)) == []


def test_async_channel_methods_are_coroutines_and_get_iter_an_async_generator() -> None:
    for name in ("connect", "close", "put", "puta", "get", "get_acq", "get_stream"):
        assert inspect.iscoroutinefunction(getattr(AsyncChannel, name)), name
    assert inspect.isasyncgenfunction(AsyncChannel.get_iter)
    assert inspect.isgeneratorfunction(Channel.get_iter)


def test_key_is_a_frozen_ordered_slotted_dataclass_with_defaults() -> None:
    from tstorage_client.record import Key

    assert dataclasses.is_dataclass(Key)
    fields = dataclasses.fields(Key)
    assert [(f.name, f.default) for f in fields] == [
        ("cid", -1),
        ("mid", -1),
        ("moid", -1),
        ("cap", -1),
        ("acq", -1),
    ]
    assert params(Key) == [(name, POSITIONAL, -1) for name in ("cid", "mid", "moid", "cap", "acq")]
    assert Key() == Key(-1, -1, -1, -1, -1)
    assert Key(1) == Key(1, -1, -1, -1, -1)
    assert not hasattr(Key(1), "__dict__")
    assert hasattr(Key, "__slots__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        Key(1).cid = 2  # type: ignore[misc]
    assert Key(1, 2) < Key(1, 3) < Key(2, 0)
    assert sorted([Key(2), Key(1, 5), Key(1, 4)]) == [Key(1, 4), Key(1, 5), Key(2)]
    assert len({Key(1), Key(1), Key(2)}) == 2


def test_key_bytes_round_trip_and_numpy_dtype_list() -> None:
    import struct

    import numpy

    from tstorage_client.record import Key

    key = Key(1, 2, 3, 4, 5)
    assert Key.bytes_count() == 32
    assert key.to_bytes() == struct.pack("<iqiqq", 1, 2, 3, 4, 5)
    assert key.to_bytes(with_cid=False) == struct.pack("<qiqq", 2, 3, 4, 5)
    assert key.to_bytes(with_acq=False) == struct.pack("<iqiq", 1, 2, 3, 4)
    assert key.to_bytes(with_cid=False, with_acq=False) == struct.pack("<qiq", 2, 3, 4)
    assert params(Key.to_bytes) == [("with_cid", KEYWORD, True), ("with_acq", KEYWORD, True)]
    assert params(Key.from_bytes) == [("data", POSITIONAL, EMPTY), ("offset", POSITIONAL, 0)]
    assert Key.from_bytes(key.to_bytes()) == key
    assert Key.from_bytes(b"xx" + key.to_bytes(), 2) == key
    assert Key.from_bytes(key.to_bytes()[:31]) is None
    assert Key.from_bytes(Key(-1, 2, 3, 4, 5).to_bytes()) is None
    assert Key.min().valid()
    assert not Key(-1).valid()
    assert Key._numpy_dtype_list == [
        ("cid", numpy.int32),
        ("mid", numpy.int64),
        ("moid", numpy.int32),
        ("cap", numpy.int64),
        ("acq", numpy.int64),
    ]


def test_record_is_frozen_ordered_hashable_and_generic() -> None:
    from tstorage_client.record import Key, Record

    assert [f.name for f in dataclasses.fields(Record)] == ["key", "value"]
    record = Record(Key(1), 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.value = 3.0  # type: ignore[misc]
    assert Record(Key(1), 2) < Record(Key(1), 3) < Record(Key(2), 0)
    assert hash(record) == hash(Record(Key(1), 2.0))
    assert Record[float](Key(1), 1.0).value == 1.0
    match record:
        case Record(Key(cid, mid), value):
            assert (cid, mid, value) == (1, -1, 2.0)


def test_records_set_is_a_protocol_a_list_satisfies() -> None:
    from tstorage_client.record import Key, Record
    from tstorage_client.records_set import GetCallback, RecordsSet

    records: list[Record[int]] = [Record(Key(1), 1)]
    assert isinstance(records, RecordsSet)
    assert not isinstance(frozenset(records), RecordsSet)  # no append
    callback: GetCallback[int] = records.extend
    callback(records)


def test_response_status_values_and_truthiness() -> None:
    from tstorage_client.response import ResponseStatus

    assert {s.name: s.value for s in ResponseStatus} == {
        "OK": 0,
        "ERROR": -1,
        "DISCONNECTED": 128,
        "BAD_REQUEST": 129,
        "UNPARSEABLE_ENTITY": 130,
        "NO_MEMORY": 131,
    }
    assert bool(ResponseStatus.OK) is True
    assert ResponseStatus.OK.is_ok()
    for status in ResponseStatus:
        if status is not ResponseStatus.OK:
            assert bool(status) is False
            assert not status.is_ok()
    assert ResponseStatus.OK == 0  # still an IntEnum


def test_responses_are_frozen_slotted_dataclasses_with_status_first() -> None:
    from tstorage_client.response import Response, ResponseAcq, ResponseGet, ResponseStatus

    ok, error = ResponseStatus.OK, ResponseStatus.ERROR
    for cls in (Response, ResponseAcq, ResponseGet):
        assert dataclasses.fields(cls)[0].name == "status"
        assert "__slots__" in vars(cls)
        response = cls(status=ok)
        with pytest.raises(dataclasses.FrozenInstanceError):
            response.status = error  # type: ignore[misc]
        assert bool(response)
        assert response.is_ok()
        assert not cls(error)
        assert not cls(error).is_ok()
        assert response.result is ok  # our alias
    assert ResponseAcq(ok).acq == -1
    assert ResponseGet(ok).data == []
    assert ResponseGet(ok).acq == -1
    assert ResponseGet(ok).data is not ResponseGet(ok).data
    assert repr(ResponseAcq(ok, 5)) == "ResponseAcq(status=<ResponseStatus.OK: 0>, acq=5)"
    assert ResponseGet(ok, 3, [1]) == ResponseGet(status=ok, acq=3, data=[1])
    assert ResponseGet[int](ok, 3, [1]).data == [1]  # generic in the record value
    with pytest.raises(dataclasses.FrozenInstanceError):
        ResponseAcq(ok).unknown = 1  # type: ignore[attr-defined]


def test_payload_types_are_generic_and_behave_as_documented() -> None:
    import struct

    from tstorage_client.payload_type import (
        BytesPayloadType,
        PayloadType,
        StructPayloadType,
        TuplePayloadType,
        UnitPayloadType,
    )

    assert inspect.isabstract(PayloadType)
    ints = StructPayloadType[int]("<i")
    assert ints.to_bytes(7) == struct.pack("<i", 7)
    assert ints.from_bytes(struct.pack("<i", 7)) == 7
    assert ints.from_bytes(b"\0" * 3) is None  # struct.error: wrong length
    pairs = TuplePayloadType[tuple[int, float]]("<id")
    assert pairs.from_bytes(pairs.to_bytes((1, 2.5))) == (1, 2.5)
    assert pairs.from_bytes(b"") is None
    assert UnitPayloadType().to_bytes(()) == b""
    assert UnitPayloadType().from_bytes(b"x") == ()
    assert BytesPayloadType().from_bytes(b"ab") == b"ab"
    assert type(BytesPayloadType().from_bytes(b"ab")) is bytes


def test_timestamp_functions_and_tstoragedatetime() -> None:
    import datetime as dt

    from tstorage_client import timestamp
    from tstorage_client.timestamp import Tstoragedatetime

    assert timestamp.to_unix(0) == 978307200
    assert timestamp.from_unix(978307200) == 0
    assert timestamp.to_unix_ns(5) == 978307200 * 10**9 + 5
    assert timestamp.from_unix_ns(978307200 * 10**9 + 5) == 5
    assert isinstance(timestamp.now(), float)
    assert isinstance(timestamp.now_ns(), int)
    assert abs(timestamp.now_ns() / 1e9 - timestamp.now()) < 60
    assert dataclasses.is_dataclass(Tstoragedatetime)
    assert [f.name for f in dataclasses.fields(Tstoragedatetime)] == ["datetime", "nanoseconds"]
    for name in ("from_unix", "from_unix_ns", "from_tstorage", "from_tstorage_ns"):
        (first, *rest) = params(getattr(Tstoragedatetime, name))
        assert first[1] is POSITIONAL
        assert rest == [("tzinfo", KEYWORD, dt.UTC)]
    moment = Tstoragedatetime.from_tstorage_ns(1_500)
    assert moment.datetime == dt.datetime(2001, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)
    assert moment.nanoseconds == 500
    assert moment.to_tstorage_ns() == 1_500
    assert moment.to_unix_ns() == 978307200 * 10**9 + 1500
    assert Tstoragedatetime.from_unix(1.5).to_unix() == 1.5
    berlin = dt.timezone(dt.timedelta(hours=1))
    shifted = Tstoragedatetime.from_tstorage(0, tzinfo=berlin)
    assert shifted.datetime.utcoffset() == dt.timedelta(hours=1)
    assert shifted.to_tstorage_ns() == 0
    naive = Tstoragedatetime.from_unix_ns(10**9, tzinfo=None)
    assert naive.datetime.tzinfo is None
    assert naive.to_unix_ns() == 10**9
    assert Tstoragedatetime.from_tstorage(1) < Tstoragedatetime.from_tstorage(2)  # order=True
