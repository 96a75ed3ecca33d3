"""Every client feature end to end against tstorage-server, through Channel and AsyncChannel."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
import trustme

from tstorage_client.channel import Channel
from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import BytesPayloadType, StructPayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseAcq, ResponseStatus
from tstorage_server.storage import sqlite as sqlite_storage
from tstorage_server.testing import RunningServer, serve

DOUBLE = StructPayloadType("<d")
ALL = (Key.min(), Key.max())


def meter(cid: int, count: int, mid: int = 1) -> list[Record[float]]:
    return [Record(Key(cid, mid, 7, 1000 + i), float(i)) for i in range(count)]


def values(records) -> list[tuple[int, int, int, int, float]]:
    return [(r.key.cid, r.key.mid, r.key.moid, r.key.cap, r.value) for r in records]


# ---------------------------------------------------------------- blocking Channel


def test_channel_put_then_get_reads_back_with_the_assigned_acqs(server: RunningServer) -> None:
    with Channel(server.host, server.port, DOUBLE) as channel:
        put = channel.put(meter(1, 100) + meter(2, 50))
        assert put.status == ResponseStatus.OK
        got = channel.get(*ALL)
        assert got.status == ResponseStatus.OK
        assert values(got.data) == values(meter(1, 100) + meter(2, 50))
        assert sorted(r.key.acq for r in got.data) == list(range(put.acq_min, put.acq_max + 1))
        assert got.acq > put.acq_max


def test_channel_puta_keeps_acqs_and_upserts(server: RunningServer) -> None:
    with Channel(server.host, server.port, DOUBLE) as channel:
        assert channel.puta([Record(Key(1, 2, 3, 4, 5), 1.0), Record(Key(1, 2, 3, 4, 6), 2.0)])
        assert channel.puta([Record(Key(1, 2, 3, 4, 5), 9.0)])
        got = channel.get(*ALL)
        assert [(r.key, r.value) for r in got.data] == [
            (Key(1, 2, 3, 4, 5), 9.0),
            (Key(1, 2, 3, 4, 6), 2.0),
        ]


def test_channel_small_batches_and_interleaved_cids_arrive_complete(server: RunningServer) -> None:
    records = [r for pair in zip(meter(1, 300), meter(2, 300), strict=True) for r in pair]
    with Channel(server.host, server.port, DOUBLE, max_batch_size=100) as channel:
        assert channel.put(records)
        assert sorted(values(channel.get(*ALL).data)) == sorted(values(records))


def test_channel_invalid_record_ends_or_is_skipped(server: RunningServer) -> None:
    bad = Record(Key(-1, 0, 0, 0), 0.0)
    with Channel(server.host, server.port, DOUBLE) as channel:
        assert channel.put([*meter(1, 3), bad, *meter(2, 3)])
        assert values(channel.get(*ALL).data) == values(meter(1, 3))
        assert channel.put([bad, *meter(3, 2)], skip_invalid=True)
        assert len(channel.get(Key(3, *Key.min()[1:]), Key(4, *Key.max()[1:])).data) == 2


def test_channel_get_acq_and_incremental_reading_miss_nothing(server: RunningServer) -> None:
    with Channel(server.host, server.port, DOUBLE) as channel:
        seen: list[float] = []
        last_acq0 = Key.min().acq
        for round_ in range(3):
            assert channel.put(
                [Record(Key(1, 1, 1, round_ * 10 + i), float(round_ * 10 + i)) for i in range(10)]
            )
            acq0 = channel.get_acq(*ALL)
            assert acq0.status == ResponseStatus.OK
            got = channel.get(Key(0, *Key.min()[1:4], last_acq0), Key(*Key.max()[:4], acq0.acq))
            seen += [r.value for r in got.data]
            last_acq0 = acq0.acq
        assert seen == [float(i) for i in range(30)]


def test_channel_get_stream_batches_fit_the_memory_limit(server: RunningServer) -> None:
    limit = 44 * 100  # 100 records of 4 + 32 + 8 bytes
    with Channel(server.host, server.port, DOUBLE, memory_limit=limit) as channel:
        assert channel.put(meter(1, 1000))
        batches: list[int] = []
        result = channel.get_stream(*ALL, lambda batch: batches.append(len(batch)))
        assert result.status == ResponseStatus.OK
        assert sum(batches) == 1000
        assert max(batches) <= 100
        # get() of the same range does not fit: NO_MEMORY; the server is fine after it.
        assert channel.get(*ALL).status == ResponseStatus.NO_MEMORY
        assert channel.connect()
        assert channel.get_acq(*ALL)


def test_channel_record_larger_than_the_memory_limit_is_no_memory(server: RunningServer) -> None:
    with Channel(server.host, server.port, BytesPayloadType(), memory_limit=1000) as channel:
        assert channel.put([Record(Key(1, 1, 1, 1), b"x" * 2000)])
        assert channel.get_stream(*ALL, lambda batch: None).status == ResponseStatus.NO_MEMORY


def test_channel_get_iter_streams_a_large_range(server: RunningServer) -> None:
    with Channel(server.host, server.port, DOUBLE, memory_limit=64 * 1024) as channel:
        assert channel.put(meter(1, 20_000) + meter(2, 20_000))
        items = list(channel.get_iter(*ALL))
        assert sum(1 for item in items if isinstance(item, Record)) == 40_000
        assert isinstance(items[-1], ResponseAcq)
        assert items[-1].status == ResponseStatus.OK


def test_channel_abandoned_get_iter_leaves_the_channel_usable(server: RunningServer) -> None:
    with Channel(server.host, server.port, DOUBLE) as channel:
        assert channel.put(meter(1, 50_000))
        for record in channel.get_iter(*ALL):
            assert isinstance(record, Record)
            assert record.value == 0.0
            break
        assert channel.get_acq(*ALL).status == ResponseStatus.OK


def test_channel_refused_range_answers_bad_request(server: RunningServer) -> None:
    with Channel(server.host, server.port, DOUBLE) as channel:
        response = channel.get(Key(0, 0, 0, 0, 0), Key(0, 10, 10, 10, 10))
        assert response.status == ResponseStatus.BAD_REQUEST


def test_channel_large_put_streams_through_an_open_transaction(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Make the SQLite staging limit tiny so the PUT takes the streaming path.
    monkeypatch.setattr(sqlite_storage, "STAGE_LIMIT_BYTES", 4096)
    with Channel(server.host, server.port, DOUBLE, max_batch_size=2000) as channel:
        put = channel.put(meter(1, 5000))
        assert put
        got = channel.get(*ALL)
        assert values(got.data) == values(meter(1, 5000))
        # Streamed chunks take their acqs as they are written: distinct, within the reported range.
        acqs = [r.key.acq for r in got.data]
        assert len(set(acqs)) == 5000
        assert put.acq_min == min(acqs)
        assert put.acq_max == max(acqs)


# ---------------------------------------------------------------- AsyncChannel


async def test_async_channel_every_operation(server: RunningServer) -> None:
    async with AsyncChannel(server.host, server.port, DOUBLE, memory_limit=44 * 500) as channel:
        put = await channel.put(meter(1, 2000))
        assert put
        assert await channel.puta([Record(Key(9, 9, 9, 9, 9), 9.0)])
        acq0 = await channel.get_acq(*ALL)
        assert acq0
        assert acq0.acq > put.acq_max
        batches: list[int] = []

        async def collect(batch) -> None:
            batches.append(len(batch))

        assert await channel.get_stream(*ALL, collect)
        assert sum(batches) == 2001
        assert max(batches) <= 500
        items = [r async for r in channel.get_iter(*ALL)]
        assert items[-1]
        records = items[:-1]
        assert values(records) == [*values(meter(1, 2000)), (9, 9, 9, 9, 9.0)]
        assert (await channel.get(*ALL)).status == ResponseStatus.NO_MEMORY
        # The channel closes after a failed request; a reconnect serves on.
        assert await channel.connect()
        small = await channel.get(Key(9, *Key.min()[1:]), Key(10, *Key.max()[1:]))
        assert small
        assert [r.value for r in small.data] == [9.0]


async def test_async_channels_concurrently(server: RunningServer) -> None:
    import asyncio

    async def writer(cid: int) -> int:
        async with AsyncChannel(server.host, server.port, DOUBLE) as channel:
            for _ in range(5):
                assert await channel.put(meter(cid, 100))
            got = await channel.get(Key(cid, *Key.min()[1:]), Key(cid + 1, *Key.max()[1:]))
            return len(got.data)

    assert await asyncio.gather(*(writer(cid) for cid in range(20))) == [500] * 20


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(certificate_authority: trustme.CA, tmp_path) -> Iterator[RunningServer]:
    cert = certificate_authority.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    with serve(tls=(tmp_path / "server.pem", tmp_path / "server.pem")) as running:
        yield running


def client_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    return context


def test_tls_channel_round_trip(
    tls_server: RunningServer, certificate_authority: trustme.CA
) -> None:
    context = client_context(certificate_authority)
    with Channel(tls_server.host, tls_server.port, DOUBLE, ssl_context=context) as channel:
        assert channel.put(meter(1, 1000))
        assert values(channel.get(*ALL).data) == values(meter(1, 1000))


async def test_tls_async_channel_round_trip(
    tls_server: RunningServer, certificate_authority: trustme.CA
) -> None:
    context = client_context(certificate_authority)
    async with AsyncChannel(
        tls_server.host, tls_server.port, DOUBLE, ssl_context=context
    ) as channel:
        assert await channel.put(meter(1, 1000))
        assert values((await channel.get(*ALL)).data) == values(meter(1, 1000))


def test_tls_server_refuses_a_plain_client(tls_server: RunningServer) -> None:
    with Channel(tls_server.host, tls_server.port, DOUBLE, timeout=10) as channel:
        assert channel.get_acq(*ALL).status != ResponseStatus.OK


def test_tls_client_distrusting_the_certificate_cannot_connect(tls_server: RunningServer) -> None:
    channel = Channel(
        tls_server.host, tls_server.port, DOUBLE, ssl_context=ssl.create_default_context()
    )
    assert channel.connect().status == ResponseStatus.ERROR


def test_tls_from_the_command_line(certificate_authority: trustme.CA, tmp_path) -> None:
    from tstorage_server.testing import ServerProcess

    cert = certificate_authority.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    with ServerProcess(None, tls=(tmp_path / "cert.pem", tmp_path / "key.pem")) as process:
        context = client_context(certificate_authority)
        with Channel(process.host, process.port, DOUBLE, ssl_context=context) as channel:
            assert channel.put(meter(1, 10))
            assert len(channel.get(*ALL).data) == 10
