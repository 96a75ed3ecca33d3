"""Channel and AsyncChannel over real loopback sockets (each test runs for both).

Well-behaved cases run against the project's server (``tstorage_server.testing.serve``);
hostile, truncated and stalled servers are scripted in-test peers (client_testkit).
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest
import trustme
from client_testkit import HEADER, I32, get_response, put_ok, read_request, scripted

from tstorage_client.payload_type import BytesPayloadType, StructPayloadType, TuplePayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseStatus
from tstorage_server.testing import RunningServer, serve

OK = ResponseStatus.OK


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with serve(memory=True) as running:
        yield running


def _records(count: int, cid: int = 1) -> list[Record[float]]:
    return [Record(Key(cid, i, i % 7, 1000 + i), i / 2) for i in range(count)]


def _stripped(records: Any) -> list[tuple[tuple[int, int, int, int], Any]]:
    """(cid, mid, moid, cap), value: what a put keeps (acq is the server's)."""
    return [(tuple(r.key)[:4], r.value) for r in records]


# ------------------------------------------------------------------ against the server


async def test_put_then_get_returns_the_records_with_server_acq(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port, TuplePayloadType("<if?"))
    assert (await client.connect()).is_ok()
    records = [Record(Key(c, 4, 7, 1234 + c), (10 + c, 12.5, c % 2 == 0)) for c in (1, 2, 3)]
    put = await client.put(records)
    assert put.is_ok()
    assert put.acq_min <= put.acq_max
    got = await client.get()
    assert got.is_ok()
    assert _stripped(got.data) == _stripped(records)
    assert all(put.acq_min <= r.key.acq <= put.acq_max for r in got.data)
    acq = await client.get_acq()
    assert acq.is_ok()
    assert acq.acq >= put.acq_max
    await client.close()


async def test_puta_keeps_the_callers_acq(server: RunningServer, make_client: Any) -> None:
    client = make_client(server.host, server.port)
    await client.connect()
    records = [Record(Key(5, i, 0, 10, acq=100 + i), float(i)) for i in range(3)]
    assert (await client.puta(records)).is_ok()
    got = await client.get()
    assert list(got.data) == records
    await client.close()


async def test_large_put_and_get_stream_in_many_batches(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port, memory_limit=44 * 1000)
    await client.connect()
    records = [Record(Key(i % 3, i, 0, i), float(i)) for i in range(30_000)]
    assert (await client.put(iter(records), max_batch_size=4096)).is_ok()
    batches: list[Any] = []
    response = await client.get_stream(batches.append)
    assert response.is_ok()
    assert len(batches) > 1
    assert all(len(batch) * 44 <= 44 * 1000 for batch in batches)
    assert sorted(_stripped(r for b in batches for r in b)) == sorted(_stripped(records))
    await client.close()


async def test_async_get_stream_awaits_a_coroutine_callback(server: RunningServer) -> None:
    from tstorage_client.channel_async import AsyncChannel

    async with AsyncChannel(server.host, server.port, StructPayloadType("<d")) as channel:
        await channel.put(_records(10))
        seen: list[Any] = []

        async def callback(batch: Any) -> None:
            seen.extend(batch)

        assert (await channel.get_stream(Key.min(), Key.max(), callback)).is_ok()
        assert _stripped(seen) == _stripped(_records(10))


async def test_get_iter_yields_all_records_and_reports_the_final_status(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port, memory_limit=4400)
    await client.connect()
    await client.put(_records(1000))
    records, iterator = await client.get_iter()
    assert _stripped(records) == _stripped(_records(1000))
    assert iterator.response.is_ok()
    assert iterator.response.acq > 0
    await client.close()


async def test_get_iter_left_early_is_drained_by_the_next_request(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port, memory_limit=4400)
    await client.connect()
    await client.put(_records(5000))
    records, iterator = await client.get_iter(stop_after=10)
    assert len(records) == 10
    # The channel is still usable: the rest of that response is discarded first.
    assert (await client.get_acq()).is_ok()
    again, _ = await client.get_iter()
    assert len(again) == 5000
    assert client.connected
    # The abandoned iterator ends after the batch it already held, with ERROR.
    rest = await iterator.rest()
    assert len(records) + len(rest) < 5000
    assert iterator.response.status == ResponseStatus.ERROR
    await client.close()


async def test_get_beyond_memory_limit_is_no_memory_and_closes(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port, memory_limit=44 * 100)
    await client.connect()
    await client.put(_records(101))
    got = await client.get()
    assert got.status == ResponseStatus.NO_MEMORY
    # data holds what was read within the limit; the channel closed itself.
    assert _stripped(got.data) == _stripped(_records(100))
    assert not client.connected
    assert (await client.get_acq()).status == ResponseStatus.DISCONNECTED


async def test_record_larger_than_memory_limit_is_no_memory_for_stream_and_iter(
    server: RunningServer, make_client: Any
) -> None:
    writer = make_client(server.host, server.port, BytesPayloadType())
    await writer.connect()
    await writer.put([Record(Key(1, 1, 1, 1), bytes(1000))])
    await writer.close()
    reader = make_client(server.host, server.port, BytesPayloadType(), memory_limit=500)
    await reader.connect()
    assert (await reader.get_stream(lambda batch: None)).status == ResponseStatus.NO_MEMORY
    await reader.connect()
    records, iterator = await reader.get_iter()
    assert records == []
    assert iterator.response.status == ResponseStatus.NO_MEMORY
    await reader.close()


async def test_invalid_key_ends_the_put_unless_skipped(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port)
    await client.connect()
    records = [*_records(3, cid=1), Record(Key(-1, 9, 9, 9), 9.0), *_records(3, cid=2)]
    assert (await client.put(records)).is_ok()
    assert _stripped((await client.get()).data) == _stripped(records[:3])
    assert (await client.put(records, skip_invalid=True)).is_ok()
    got = _stripped((await client.get()).data)
    # A put assigns new acqs, so the first put's three records are there twice now.
    assert sorted(got) == sorted(_stripped(records[:3] * 2 + records[4:]))
    await client.close()


async def test_disconnected_before_connect_and_after_close(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port)
    assert (await client.put(_records(1))).status == ResponseStatus.DISCONNECTED
    assert (await client.get()).status == ResponseStatus.DISCONNECTED
    assert (await client.connect()).is_ok()
    await client.close()
    assert (await client.get_acq()).status == ResponseStatus.DISCONNECTED
    assert (await client.get_stream(print)).status == ResponseStatus.DISCONNECTED
    records, iterator = await client.get_iter()
    assert records == []
    assert iterator.response.status == ResponseStatus.DISCONNECTED


async def test_connect_to_a_closed_port_is_disconnected(make_client: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connection refused
        client = make_client("127.0.0.1", port)
        assert (await client.connect()).status == ResponseStatus.ERROR
    assert (await client.get()).status == ResponseStatus.DISCONNECTED


def test_context_managers_connect_and_close(server: RunningServer) -> None:
    from tstorage_client.channel import Channel

    with Channel(server.host, server.port, StructPayloadType("<d")) as channel:
        assert channel.connected
        assert channel.put(_records(2)).is_ok()
    assert not channel.connected


async def test_async_context_manager_connects_and_closes(server: RunningServer) -> None:
    from tstorage_client.channel_async import AsyncChannel

    async with AsyncChannel(server.host, server.port, StructPayloadType("<d")) as channel:
        assert channel.connected
        assert (await channel.put(_records(2))).is_ok()
    assert not channel.connected


async def test_refused_range_is_bad_request_and_closes(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port)
    await client.connect()
    empty_cids = dataclasses.replace(Key.max(), cid=0)  # 0 <= cid < 0: an empty box, refused
    got = await client.get(Key(0, 0, 0, 0, 0), empty_cids)
    assert got.status == ResponseStatus.BAD_REQUEST
    assert not client.connected


async def test_unencodable_range_is_bad_request_without_io(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port)
    await client.connect()
    assert (await client.get(Key(0, 2**64, 0, 0, 0))).status == ResponseStatus.BAD_REQUEST
    assert client.connected
    await client.close()


async def test_tls_round_trip_with_the_server(tls_ca: trustme.CA, make_client: Any) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    with serve(memory=True, tls=server_context) as running:
        client = make_client(running.host, running.port, ssl_context=client_context)
        assert (await client.connect()).is_ok()
        assert (await client.put(_records(5))).is_ok()
        assert _stripped((await client.get()).data) == _stripped(_records(5))
        await client.close()
        untrusting = make_client(
            running.host, running.port, ssl_context=ssl.create_default_context()
        )
        assert (await untrusting.connect()).status == ResponseStatus.ERROR


# ------------------------------------------------------------------ scripted peers


def _answer(response: bytes, then_close: bool = False) -> Any:
    """A peer that answers each request with ``response`` (and maybe closes)."""

    def handler(conn: socket.socket, stream: BinaryIO) -> None:
        while True:
            read_request(stream)
            conn.sendall(response)
            if then_close:
                return

    return handler


@pytest.mark.parametrize("max_batch_size", [1, 100, 300, 10_000])
async def test_max_batch_size_splits_batches_exactly(make_client: Any, max_batch_size: int) -> None:
    requests: list[Any] = []

    def handler(conn: socket.socket, stream: BinaryIO) -> None:
        requests.append(read_request(stream))
        conn.sendall(put_ok(1, 2))

    records = [Record(Key(1 + i // 40, i, 0, i), float(i)) for i in range(100)]
    with scripted(handler) as peer:
        client = make_client(peer.host, peer.port)
        await client.connect()
        assert (await client.put(records, max_batch_size=max_batch_size)).is_ok()
        await client.close()
    (request,) = requests
    per_batch = max(1, max_batch_size // 32)  # 4 + n = 4 + (20 key + 8 payload) = 32 bytes
    expected = []
    for cid, group in ((1, 40), (2, 40), (3, 20)):
        for start in range(0, group, per_batch):
            expected.append((cid, min(per_batch, group - start)))
    assert [(b.cid, len(b.records)) for b in request.batches] == expected
    assert all(b.batch_bytes == 32 * len(b.records) for b in request.batches)


async def test_invalid_key_bytes_on_the_wire(make_client: Any) -> None:
    requests: list[Any] = []

    def handler(conn: socket.socket, stream: BinaryIO) -> None:
        for _ in range(2):
            requests.append(read_request(stream))
            conn.sendall(put_ok(1, 2))

    good = [Record(Key(1, i, 0, 0), 1.0) for i in range(3)]
    bad = Record(Key(1, 2**63, 0, 0), 1.0)  # mid out of range
    with scripted(handler) as peer:
        client = make_client(peer.host, peer.port)
        await client.connect()
        assert (await client.put([*good, bad, *good])).is_ok()
        assert (await client.put([*good, bad, *good], skip_invalid=True)).is_ok()
        await client.close()
    assert [k[1] for k, _ in requests[0].records] == [0, 1, 2]
    assert [k[1] for k, _ in requests[1].records] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (HEADER.pack(-1, 0), ResponseStatus.BAD_REQUEST),
        (HEADER.pack(0, 0) + I32.pack(0) + HEADER.pack(-1, 0), ResponseStatus.ERROR),
        (HEADER.pack(0, 0) + I32.pack(2**31 - 1), ResponseStatus.UNPARSEABLE_ENTITY),
        (HEADER.pack(0, 0) + I32.pack(-5), ResponseStatus.UNPARSEABLE_ENTITY),
        (HEADER.pack(0, 2**64 - 1), ResponseStatus.UNPARSEABLE_ENTITY),
        (
            HEADER.pack(0, 0) + I32.pack(0) + HEADER.pack(0, 2**40),
            ResponseStatus.UNPARSEABLE_ENTITY,
        ),
        (get_response([((1, 2, 3, 4, 5), b"abc")], 1), ResponseStatus.UNPARSEABLE_ENTITY),
        (b"\xde\xad\xbe\xef" * 50, ResponseStatus.BAD_REQUEST),
    ],
    ids=[
        "refused",
        "error-after",
        "huge-n",
        "negative-n",
        "huge-head",
        "huge-tail",
        "bad-payload",
        "garbage",
    ],
)
async def test_hostile_get_responses_give_a_status_and_close(
    make_client: Any, reply: bytes, status: ResponseStatus
) -> None:
    with scripted(_answer(reply)) as peer:
        client = make_client(peer.host, peer.port, timeout=10)
        await client.connect()
        got = await client.get()
        assert got.result == status
        assert not client.connected
        assert (await client.get()).status == ResponseStatus.DISCONNECTED


async def test_server_closing_mid_stream_is_disconnected(make_client: Any) -> None:
    full = get_response([((1, i, 0, 0, 0), bytes(8)) for i in range(100)], 5)
    with scripted(_answer(full[: len(full) // 2], then_close=True)) as peer:
        client = make_client(peer.host, peer.port)
        await client.connect()
        records, iterator = await client.get_iter()
        assert iterator.response.status == ResponseStatus.DISCONNECTED
        assert 0 < len(records) < 100
        assert not client.connected
        await client.connect()
        assert (await client.get()).status == ResponseStatus.DISCONNECTED


async def test_put_to_a_server_that_closes_is_disconnected(make_client: Any) -> None:
    def handler(conn: socket.socket, stream: BinaryIO) -> None:
        stream.read(12)  # the header, then hang up

    with scripted(handler) as peer:
        client = make_client(peer.host, peer.port)
        await client.connect()
        assert (await client.put(_records(50_000))).status == ResponseStatus.DISCONNECTED
        assert not client.connected


async def test_silent_server_times_out_as_disconnected(make_client: Any) -> None:
    with scripted(lambda conn, stream: peer.release.wait(30)) as peer:
        client = make_client(peer.host, peer.port, timeout=0.2)
        assert (await client.connect()).is_ok()
        assert (await client.get_acq()).status == ResponseStatus.DISCONNECTED
        assert not client.connected


async def test_server_stalling_mid_response_times_out(make_client: Any) -> None:
    def handler(conn: socket.socket, stream: BinaryIO) -> None:
        read_request(stream)
        conn.sendall(HEADER.pack(0, 0) + I32.pack(40))
        peer.release.wait(30)

    with scripted(handler) as peer:
        client = make_client(peer.host, peer.port, timeout=0.2)
        await client.connect()
        assert (await client.get()).status == ResponseStatus.DISCONNECTED


async def test_tls_with_a_scripted_peer(tls_ca: trustme.CA, make_client: Any) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    with scripted(_answer(struct.pack("<iQq", 0, 8, 42)), ssl_context=server_context) as peer:
        client = make_client("localhost", peer.port, ssl_context=client_context)
        assert (await client.connect()).is_ok()
        acq = await client.get_acq()
        assert acq.is_ok()
        assert acq.acq == 42
        await client.close()


async def test_unserializable_payload_raises_and_closes(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port)
    await client.connect()
    with pytest.raises(struct.error):
        await client.put([Record(Key(1, 1, 1, 1), "not a float")])
    assert not client.connected


async def test_callback_exception_propagates_and_channel_stays_usable(
    server: RunningServer, make_client: Any
) -> None:
    client = make_client(server.host, server.port, memory_limit=4400)
    await client.connect()
    await client.put(_records(3000))

    def explode(batch: Any) -> None:
        raise LookupError("consumer failed")

    with pytest.raises(LookupError):
        await client.get_stream(explode)
    # The rest of that response is discarded by the next request, which then succeeds.
    assert (await client.get_acq()).is_ok()
    records, iterator = await client.get_iter()
    assert len(records) == 3000
    assert iterator.response.is_ok()
    await client.close()


def test_sync_get_iter_is_a_generator_of_records_then_the_final_response(
    server: RunningServer,
) -> None:
    import inspect

    from tstorage_client.channel import Channel
    from tstorage_client.response import ResponseAcq

    def consume(iterator: Any) -> Any:
        yield from iterator

    with Channel(server.host, server.port, StructPayloadType("<d")) as channel:
        channel.put(_records(5))
        iterator = channel.get_iter(Key.min(), Key.max())
        assert inspect.isgenerator(iterator)
        items = list(consume(iterator))
        assert len(items) == 6
        assert all(isinstance(item, Record) for item in items[:5])
        assert isinstance(items[5], ResponseAcq)
        assert items[5].is_ok()


async def test_tls_verifies_the_configured_server_hostname(
    tls_ca: trustme.CA, make_client: Any
) -> None:
    # Reached by address, certified by name: the name to verify is given separately.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("tstorage.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    tls_ca.configure_trust(client_context)
    with serve(memory=True, tls=server_context) as running:
        named = make_client(
            running.host,
            running.port,
            ssl_context=client_context,
            server_hostname="tstorage.test",
            connect_timeout=5.0,
        )
        assert (await named.connect()).is_ok()
        assert (await named.put(_records(3))).is_ok()
        await named.close()
        by_address = make_client(running.host, running.port, ssl_context=client_context)
        assert (await by_address.connect()).status == ResponseStatus.ERROR


async def test_an_encoded_put_request_is_sent_as_it_is(make_client: Any) -> None:
    # What a spool keeps: the request bytes, sent later without building records again.
    from tstorage_client.payload_type import StructPayloadType
    from tstorage_client.protocol.client import encode_put
    from tstorage_client.protocol.codecs import codec_for

    records = _records(7)
    request = b"".join(encode_put(codec_for(StructPayloadType("<d")), records))
    with serve(memory=True) as running:
        client = make_client(running.host, running.port)
        assert (await client.connect()).is_ok()
        response = await client.put_encoded(request)
        assert response.is_ok()
        assert response.acq_min <= response.acq_max
        assert _stripped((await client.get()).data) == _stripped(records)
        with pytest.raises(ValueError, match="not an encoded PUT"):
            await client.put_encoded(b"\x01\x00\x00\x00" + bytes(8))
        await client.close()
