"""The reference client's documented behaviour, for both channels, against our server."""

from __future__ import annotations

import asyncio
import inspect
import socket
import struct
from typing import Any

import pytest
from compat_kit import call, connected, items_of

from tstorage_client.payload_type import BytesPayloadType, StructPayloadType, TuplePayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import Response, ResponseAcq, ResponseGet, ResponseStatus
from tstorage_client.timestamp import now_ns
from tstorage_server.testing import RunningServer, serve

OK = ResponseStatus.OK
INT = StructPayloadType[int]("<i")


def box(cid: int) -> tuple[Key, Key]:
    """Every key of one cid."""
    low, high = Key.min(), Key.max()
    return Key(cid, low.mid, low.moid, low.cap, low.acq), Key(cid + 1, *high[1:])


def records(cid: int, count: int) -> list[Record[int]]:
    return [Record(Key(cid, i, 0, 100 + i), i) for i in range(count)]


async def test_connect_and_close_answer_responses(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = channel_class(server.host, server.port, INT)
    assert await call(channel.close()) == Response(ResponseStatus.ERROR)  # not connected
    assert await call(channel.connect()) == Response(OK)
    assert await call(channel.close()) == Response(OK)
    with serve(memory=True) as gone:
        closed_port = gone.port
    refused = channel_class(server.host, closed_port, INT)
    assert await call(refused.connect()) == Response(ResponseStatus.ERROR)


async def test_connect_never_raises_even_for_a_port_out_of_range(
    server: RunningServer, channel_class: type[Any]
) -> None:
    # connect() answers ERROR whatever the failure. The blocking socket layer wraps a port
    # above 65535 (getaddrinfo), asyncio raised OverflowError from AsyncChannel.connect().
    with serve(memory=True) as gone:
        closed_port = gone.port
    channel = channel_class(server.host, closed_port + 65536, INT)
    assert await call(channel.connect()) == Response(ResponseStatus.ERROR)
    assert not channel.connected


async def test_a_port_above_65535_does_not_reach_the_port_it_wraps_to(
    server: RunningServer, channel_class: type[Any]
) -> None:
    # getaddrinfo takes the port modulo 65536: before, this connected to the server itself.
    channel = channel_class(server.host, server.port + 65536, INT)
    assert await call(channel.connect()) == Response(ResponseStatus.ERROR)
    assert not channel.connected


def test_with_connects_closes_and_raises_the_connection_error(server: RunningServer) -> None:
    from tstorage_client.channel import Channel

    with Channel(server.host, server.port, INT) as channel:
        assert channel.get_acq(*box(1)).is_ok()
    assert not channel.get_acq(*box(1))
    with serve(memory=True) as gone:
        closed_port = gone.port
    with pytest.raises(ConnectionRefusedError), Channel(server.host, closed_port, INT):
        pass


async def test_async_with_connects_closes_and_raises_the_connection_error(
    server: RunningServer,
) -> None:
    from tstorage_client.channel_async import AsyncChannel

    async with AsyncChannel(server.host, server.port, INT) as channel:
        assert (await channel.get_acq(*box(1))).is_ok()
    assert (await channel.get_acq(*box(1))).status is ResponseStatus.DISCONNECTED
    with serve(memory=True) as gone:
        closed_port = gone.port
    with pytest.raises(ConnectionRefusedError):
        async with AsyncChannel(server.host, closed_port, INT):
            pass


async def test_not_connected_requests_answer_disconnected(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = channel_class(server.host, server.port, INT)
    disconnected = ResponseStatus.DISCONNECTED
    assert (await call(channel.put(records(1, 1)))).status is disconnected
    assert (await call(channel.puta(records(1, 1)))).status is disconnected
    assert (await call(channel.get(*box(1)))).status is disconnected
    assert (await call(channel.get_acq(*box(1)))).status is disconnected
    assert (await call(channel.get_stream(*box(1), print))).status is disconnected
    assert await items_of(channel.get_iter(*box(1))) == [ResponseAcq(disconnected)]


async def test_put_get_get_acq_round_trip(server: RunningServer, channel_class: type[Any]) -> None:
    channel = await connected(channel_class, server, INT)
    assert (await call(channel.put(records(10, 5)))).is_ok()
    got = await call(channel.get(*box(10)))
    assert isinstance(got, ResponseGet)
    assert got.is_ok()
    assert isinstance(got.data, list)
    assert [(r.key.mid, r.value) for r in got.data] == [(i, i) for i in range(5)]
    acq = await call(channel.get_acq(*box(10)))
    assert acq.is_ok()
    assert acq.acq >= max(r.key.acq for r in got.data)
    assert got.acq >= 0
    await call(channel.close())


async def test_get_acq_answers_ok_for_an_empty_box_and_error_with_acq_minus_one_when_refused(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT)
    assert (await call(channel.put(records(12, 3)))).is_ok()
    # Empty in mid (keyMin.mid == keyMax.mid): OK, clamped to keyMax.acq.
    empty = await call(channel.get_acq(Key(12, 5, 0, 0, 0), Key(13, 5, 1, 1, 1000)))
    assert empty == ResponseAcq(OK, 1000)
    future = now_ns() + 3600 * 10**9  # keyMin.acq in the future: refused
    refused = await call(channel.get_acq(Key(12, 0, 0, 0, future), Key(13, 1, 1, 1, future + 1)))
    assert refused == ResponseAcq(ResponseStatus.ERROR, -1)
    await call(channel.close())


async def test_puta_keeps_acq_and_put_groups_by_cid(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT)
    mixed = [Record(Key(cid, i, 0, 1, 50 + i), i) for i, cid in enumerate([21, 20, 21, 20])]
    assert (await call(channel.puta(mixed))).is_ok()
    got = await call(channel.get(Key(20, *Key.min()[1:]), Key(22, *Key.max()[1:])))
    assert sorted((r.key.cid, r.key.acq) for r in got.data) == [
        (20, 51),
        (20, 53),
        (21, 50),
        (21, 52),
    ]
    await call(channel.close())


async def test_an_invalid_key_ends_the_request_unless_skipped(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT)
    data = [*records(30, 2), Record(Key(-1, 9), 9), Record(Key(30, 7, 0, 7), 7)]
    assert (await call(channel.put(data))).is_ok()
    assert [r.key.mid for r in (await call(channel.get(*box(30)))).data] == [0, 1]
    data = [Record(Key(31, 1, 0, 1), 1), Record(Key(-5), 0), Record(Key(31, 2, 0, 2), 2)]
    assert (await call(channel.put(data, 2147483647, True))).is_ok()
    assert [r.key.mid for r in (await call(channel.get(*box(31)))).data] == [1, 2]
    assert (await call(channel.put(records(32, 50), 100))).is_ok()  # tiny batches
    assert len((await call(channel.get(*box(32)))).data) == 50
    await call(channel.close())


async def test_get_iter_yields_records_then_the_final_response(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT, memory_limit=400)
    await call(channel.put(records(40, 100)))
    iterator = channel.get_iter(*box(40))
    assert inspect.isasyncgen(iterator) or inspect.isgenerator(iterator)
    items = await items_of(iterator)
    assert [r.value for r in items[:-1]] == list(range(100))
    final = items[-1]
    assert isinstance(final, ResponseAcq)
    assert final.is_ok()
    assert final.acq > 0
    seen = []
    for item in items:
        match item:
            case Record(key=key):
                seen.append(key.mid)
            case ResponseAcq(status=status):
                assert status is OK
    assert seen == list(range(100))
    # A refused range ends with its failure status, not an exception.
    refused = await items_of(channel.get_iter(Key(40, 5, 0, 0, 0), Key(40, 6, 1, 1, 1)))
    assert refused == [ResponseAcq(ResponseStatus.BAD_REQUEST)]
    await call(channel.close())


async def test_leaving_get_iter_early_leaves_the_channel_usable(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT, memory_limit=400)
    await call(channel.put(records(41, 500)))
    iterator = channel.get_iter(*box(41))
    if inspect.isasyncgen(iterator):
        async for item in iterator:
            assert isinstance(item, Record)
            break
    else:
        for item in iterator:
            assert isinstance(item, Record)
            break
    assert (await call(channel.get_acq(*box(41)))).is_ok()
    channel.memory_limit = None  # get holds the whole range
    assert len((await call(channel.get(*box(41)))).data) == 500
    await call(channel.close())


@pytest.mark.parametrize(("memory_limit", "calls"), [(90, 4), (120, 3)])
async def test_get_stream_batches_fit_the_memory_limit(
    server: RunningServer, channel_class: type[Any], memory_limit: int, calls: int
) -> None:
    cid = 50 + memory_limit
    channel = await connected(channel_class, server, INT, memory_limit=memory_limit)
    await call(channel.put(records(cid, 8)))  # 8 records of 4 + 32 + 4 bytes
    batches: list[list[Record[int]]] = []
    final = await call(channel.get_stream(*box(cid), batches.append))
    assert final.is_ok()
    assert isinstance(final, ResponseAcq)
    assert len(batches) == calls
    assert all(batch for batch in batches)
    assert [r.value for batch in batches for r in batch] == list(range(8))
    await call(channel.close())


async def test_a_record_larger_than_memory_limit_is_no_memory_without_callback(
    server: RunningServer, channel_class: type[Any]
) -> None:
    writer = channel_class(server.host, server.port, BytesPayloadType())
    await call(writer.connect())
    await call(writer.put([Record(Key(60, 1, 0, 1), b"x" * 100)]))
    await call(writer.close())
    channel = await connected(channel_class, server, BytesPayloadType(), memory_limit=100)
    calls: list[Any] = []
    final = await call(channel.get_stream(*box(60), calls.append))
    assert final.status is ResponseStatus.NO_MEMORY
    assert calls == []
    await call(channel.connect())
    got = await call(channel.get(*box(60)))
    assert got.status is ResponseStatus.NO_MEMORY
    assert not channel.connected  # the channel closed itself


async def test_memory_limit_none_is_no_limit_and_settable(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = channel_class(server.host, server.port, INT, memory_limit=None)
    assert channel.memory_limit is None
    await call(channel.connect())
    await call(channel.put(records(61, 3000)))
    assert len((await call(channel.get(*box(61)))).data) == 3000
    channel.memory_limit = 40 * 10
    assert (await call(channel.get(*box(61)))).status is ResponseStatus.NO_MEMORY
    await call(channel.connect())
    channel.memory_limit = None
    assert (await call(channel.get(*box(61)))).is_ok()
    await call(channel.close())


async def test_get_accepts_recv_buffer_size(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT)
    await call(channel.put(records(62, 20)))
    assert len((await call(channel.get(*box(62), 4096))).data) == 20
    assert len((await call(channel.get(*box(62), recv_buffer_size=1 << 20))).data) == 20
    assert (await items_of(channel.get_iter(*box(62), 100)))[-1].is_ok()
    assert (await call(channel.get_stream(*box(62), print, recv_buffer_size=10))).is_ok()
    await call(channel.close())


async def test_the_payload_type_may_be_replaced_between_requests(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, INT)
    await call(channel.put(records(63, 2)))
    assert channel._payload_type is INT
    channel._payload_type = BytesPayloadType()
    got = await call(channel.get(*box(63)))
    assert [r.value for r in got.data] == [struct.pack("<i", 0), struct.pack("<i", 1)]
    channel._payload_type = TuplePayloadType("<hh")
    assert (await call(channel.put([Record(Key(64, 1, 0, 1), (1, 2))]))).is_ok()
    assert (await call(channel.get(*box(64)))).data[0].value == (1, 2)
    await call(channel.close())


async def test_a_payload_that_does_not_decode_is_unparseable_with_data_so_far(
    server: RunningServer, channel_class: type[Any]
) -> None:
    channel = await connected(channel_class, server, BytesPayloadType())
    await call(channel.put([Record(Key(65, 1, 0, 1), b"abcd"), Record(Key(65, 2, 0, 1), b"ab")]))
    channel._payload_type = INT
    got = await call(channel.get(*box(65)))
    assert got.status is ResponseStatus.UNPARSEABLE_ENTITY
    assert [r.value for r in got.data] == [struct.unpack("<i", b"abcd")[0]]
    assert not channel.connected


def _silent_peer() -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))
    return listener, listener.getsockname()[1]


def test_setting_timeout_applies_to_the_live_connection() -> None:
    from tstorage_client.channel import Channel

    listener, port = _silent_peer()  # accepts (backlog) and never answers
    with listener:
        channel = Channel("127.0.0.1", port, INT)  # timeout None: no limit
        assert channel.timeout is None
        assert channel.connect().is_ok()
        channel.timeout = 0.2
        assert channel.get_acq(*box(1)).status is ResponseStatus.DISCONNECTED
        assert not channel.connected


async def test_async_timeout_is_a_keyword_extra_that_applies_to_the_live_connection() -> None:
    from tstorage_client.channel_async import AsyncChannel

    listener, port = _silent_peer()
    with listener:
        channel = AsyncChannel("127.0.0.1", port, INT)
        assert (await channel.connect()).is_ok()
        channel.timeout = 0.2
        assert (await channel.get_acq(*box(1))).status is ResponseStatus.DISCONNECTED
        # Without a timeout the reference's advice holds: asyncio.timeout bounds a call.
        assert (await channel.connect()).is_ok()
        channel.timeout = None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await channel.get_acq(*box(1))
