"""A large get() leaves the cyclic GC nothing to do, keeps one object per record, and its
response has a bounded repr.

get() pauses the collector while it reads; afterwards the records must not sit in the young
generation with an allocation count far past its threshold (the next allocation would start
a collection over every record, and later ones again up to a full pass). They are moved to
the oldest generation instead, which these tests observe through ``gc`` itself.
"""

from __future__ import annotations

import gc
import socket
import sys
from typing import Any, BinaryIO

import pytest
from client_testkit import get_response, read_request, scripted

from tstorage_client.payload_type import StructPayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseGet, ResponseStatus

COUNT = 60_000
RECORDS: list[tuple[tuple[int, ...], bytes]] = [
    ((1, i, 0, 10**12 + i, 10**15 + i), bytes(8)) for i in range(COUNT)
]


def _serve_records(conn: socket.socket, stream: BinaryIO) -> None:
    response = get_response(RECORDS, 77)
    while True:
        read_request(stream)
        conn.sendall(response)


async def test_get_triggers_no_collection_over_the_records(make_client: Any) -> None:
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # the precondition of the constant-time handling
    collections: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    with scripted(_serve_records) as peer:
        client = make_client(peer.host, peer.port, StructPayloadType("<d"))
        await client.connect()
        gc.callbacks.append(on_gc)
        try:
            response = await client.get()
            during = list(collections)
            young_count = gc.get_count()[0]
            young = {id(o) for o in gc.get_objects(generation=0)}
            middle = {id(o) for o in gc.get_objects(generation=1)}
            # Allocations after the read: enough surviving objects for young collections.
            kept = [[i] for i in range(3 * gc.get_threshold()[0])]
        finally:
            gc.callbacks.remove(on_gc)
        await client.close()
    assert response.status is ResponseStatus.OK
    assert len(response.data) == COUNT
    assert during == []  # the read started no collection, not even of the young generation
    assert young_count < gc.get_threshold()[0]  # and none is due because of it
    for record in (response.data[0], response.data[COUNT // 2], response.data[-1]):
        assert gc.is_tracked(record)
        assert id(record) not in young
        assert id(record) not in middle
        assert id(record.key) not in young
        assert id(record.key) not in middle
    assert 2 not in collections, collections
    assert len(kept) == 3 * gc.get_threshold()[0]


def _serve_few(conn: socket.socket, stream: BinaryIO) -> None:
    response = get_response(RECORDS[:50], 78)
    while True:
        read_request(stream)
        conn.sendall(response)


def test_a_small_get_leaves_the_generations_alone() -> None:
    # Aging on every small get would keep moving the program's young objects (cyclic
    # garbage included) to the oldest generation; only large reads do it.
    from tstorage_client.channel import Channel

    with scripted(_serve_few) as peer, Channel(peer.host, peer.port, StructPayloadType("<d")) as ch:
        gc.collect()  # the young count starts at zero: the get below triggers no collection
        marker = [object()]
        response = ch.get(Key.min(), Key.max())
        young = {id(o) for o in gc.get_objects(generation=0)}
    assert len(response.data) == 50
    assert id(marker) in young


def test_gc_freeze_of_the_program_is_left_alone() -> None:
    # A program that froze objects itself keeps them frozen after a get.
    from tstorage_client._operations import _age_young_objects

    marker = [object()]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        _age_young_objects()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert marker


def test_response_get_repr_summarises_long_data() -> None:
    records = [Record(Key(1, i), float(i)) for i in range(100_000)]
    text = repr(ResponseGet(ResponseStatus.OK, 5, records))
    assert len(text) < 400
    assert text.startswith("ResponseGet(status=<ResponseStatus.OK: 0>, acq=5, data=[Record(")
    assert "(100000 items)" in text


@pytest.mark.parametrize("count", [0, 1, 6])
def test_response_get_repr_of_short_data_is_the_dataclass_repr(count: int) -> None:
    records = [Record(Key(1, i), float(i)) for i in range(count)]
    response = ResponseGet(ResponseStatus.ERROR, -1, records)
    assert (
        repr(response)
        == f"ResponseGet(status=<ResponseStatus.ERROR: -1>, acq=-1, data={records!r})"
    )


async def test_each_record_a_get_returns_is_one_flat_object(make_client: Any) -> None:
    """A record holds its key's fields itself: no Key object per record stays in memory."""
    with scripted(_serve_records) as peer:
        client = make_client(peer.host, peer.port, StructPayloadType("<d"))
        await client.connect()
        response = await client.get()
        await client.close()
    assert response.status is ResponseStatus.OK
    first = response.data[0]
    assert type(first) is Record
    assert tuple(first) == (1, 0, 0, 10**12, 10**15, 0.0)
    assert not any(isinstance(field, Key) for record in response.data for field in record)
    assert first.key == Key(1, 0, 0, 10**12, 10**15)
    assert first.value == 0.0
    assert [record.key.mid for record in response.data[:3]] == [0, 1, 2]


def test_a_record_is_smaller_than_a_key_and_a_pair_of_it() -> None:
    record = Record(Key(1, 2, 3, 4, 5), 0.5)
    assert record == Record(Key(1, 2, 3, 4, 5), 0.5)
    assert record.key == Key(1, 2, 3, 4, 5)
    assert sys.getsizeof(record) < sys.getsizeof(record.key) + sys.getsizeof((record.key, 0.5))


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (Record(Key(1, 2, 3, 4, 5), 9.0), Record(Key(1, 2, 3, 4, 6), 0.0)),  # key first
        (Record(Key(1, 2, 3, 4, 5), 0.0), Record(Key(1, 2, 3, 4, 5), 1.0)),  # then value
        (Record(Key(0, 9, 9, 9, 9), 9.0), Record(Key(1, 0, 0, 0, 0), 0.0)),
    ],
)
def test_records_order_by_key_then_value(low: Record[float], high: Record[float]) -> None:
    assert low < high
    assert high > low
    assert low <= high
    assert not high <= low
    assert sorted([high, low]) == [low, high]
    assert (low.key, low.value) < (high.key, high.value)  # the dataclass order, field by field


@pytest.mark.parametrize("key", [None, "cid", (1, 2, 3), 7])
def test_a_record_of_something_that_is_not_a_key_is_refused_by_name(key: object) -> None:
    with pytest.raises(TypeError, match="a Record's key must be a Key"):
        Record(key, 1.0)  # type: ignore[arg-type]
