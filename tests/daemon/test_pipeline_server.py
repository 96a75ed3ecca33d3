"""The pipeline against the real tstorage-server over loopback: outages, restarts, refusals."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.protocol.wire import HEADER, INT32
from tstorage_client.record import Key, Record
from tstorage_server.testing import serve_async
from tstoraged.pipeline.deadletter import DeadLetterFile, iter_dead_letters
from tstoraged.pipeline.pipeline import Pipeline
from tstoraged.pipeline.settings import (
    BatchSettings,
    QueueSettings,
    RetrySettings,
    TargetSettings,
    WriteMode,
)
from tstoraged.pipeline.testing import RecordingObserver

FAST_RETRY = RetrySettings(initial_backoff=0.01, max_backoff=0.05, jitter=0.2)
BATCH = BatchSettings(max_records=100, flush_interval=0.05)
POISON = b"POISON"


class WatchingObserver(RecordingObserver):
    """Sets events when retries or writes reach a count, so tests wait on facts, not time."""

    def __init__(self) -> None:
        super().__init__()
        self.retried = asyncio.Event()
        self.retries_wanted = 1
        self.written_event = asyncio.Event()
        self.written_wanted = 0

    def write_retried(self, reason: str) -> None:
        super().write_retried(reason)
        if len(self.retries) >= self.retries_wanted:
            self.retried.set()

    def records_written(self, source: str, count: int) -> None:
        super().records_written(source, count)
        if sum(self.written.values()) >= self.written_wanted:
            self.written_event.set()


def reserve_port() -> int:
    """A free loopback port for a server that starts later (a small race, accepted in tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def records(count: int, *, start: int = 0, cid: int = 1) -> list[Record[bytes]]:
    return [Record(Key(cid, i, 7, 1000 + i), b"v%d" % i) for i in range(start, start + count)]


def make_pipeline(
    tmp_path, port: int, observer: RecordingObserver, write_mode: WriteMode = "put"
) -> Pipeline:
    return Pipeline(
        target=TargetSettings(port=port, timeout=5.0, write_mode=write_mode),
        batch=BATCH,
        queue=QueueSettings(max_records=1000),
        retry=FAST_RETRY,
        dead_letters=DeadLetterFile(tmp_path / "dead-letter.jsonl"),
        observer=observer,
    )


async def stored(port: int) -> list[Record[bytes]]:
    async with AsyncChannel("127.0.0.1", port, BytesPayloadType()) as channel:
        response = await channel.get(Key.min(), Key.max())
    assert response.is_ok(), response
    return sorted(response.data)


def without_acq(recs: list[Record[bytes]]) -> list[tuple[tuple[int, ...], bytes]]:
    return sorted((tuple(r.key)[:4], r.value) for r in recs)


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(30):
        await event.wait()


async def test_retries_while_the_server_is_down_then_every_record_arrives(tmp_path):
    port = reserve_port()
    observer = WatchingObserver()
    observer.retries_wanted = 3
    acked = []
    async with make_pipeline(tmp_path, port, observer) as pipeline:
        for i in range(5):
            await pipeline.emit("gen", records(60, start=i * 60), lambda i=i: acked.append(i))
        await wait_for(observer.retried)  # the writer is retrying against a closed port
        assert acked == []
        async with serve_async(port=port) as server:
            report = await pipeline.drain(30)
            assert report.complete
            assert without_acq(await stored(server.port)) == without_acq(records(300))
    assert acked == [0, 1, 2, 3, 4]
    assert len(observer.retries) >= 3
    assert observer.written == {"gen": 300}
    assert list(iter_dead_letters(tmp_path / "dead-letter.jsonl")) == []


async def test_reconnects_after_the_server_restarts(tmp_path):
    port = reserve_port()
    data = tmp_path / "data"
    observer = WatchingObserver()
    observer.written_wanted = 50
    async with make_pipeline(tmp_path, port, observer) as pipeline:
        async with serve_async(data_dir=data, port=port):
            await pipeline.emit("gen", records(50))
            await wait_for(observer.written_event)
        # The server is gone; the channel still holds the dead connection.
        observer.written_event.clear()
        observer.written_wanted = 100
        async with serve_async(data_dir=data, port=port) as server:
            await pipeline.emit("gen", records(50, start=50))
            await wait_for(observer.written_event)
            report = await pipeline.drain(30)
            assert report.complete
            assert without_acq(await stored(server.port)) == without_acq(records(100))
    connected = [state for _, state in observer.connection]
    assert connected[:3] == [True, False, True]


async def test_puta_writes_the_acq_assigned_at_seal(tmp_path):
    port = reserve_port()
    observer = WatchingObserver()
    observer.retries_wanted = 2
    async with make_pipeline(tmp_path, port, observer, write_mode="puta") as pipeline:
        await pipeline.emit("gen", records(30))
        await wait_for(observer.retried)
        async with serve_async(port=port) as server:
            report = await pipeline.drain(30)
            assert report.complete
            back = await stored(server.port)
    acqs = [r.key.acq for r in back]
    assert len(set(acqs)) == 30
    assert without_acq(back) == without_acq(records(30))


async def test_invalid_records_are_dead_lettered_and_the_rest_delivered(tmp_path):
    observer = WatchingObserver()
    good = records(20)
    bad = [Record(Key(1, 2**63 - 1, 0, 5), b"dropped silently by TStorage")]
    async with serve_async() as server:
        async with make_pipeline(tmp_path, server.port, observer) as pipeline:
            await pipeline.emit("gen", good[:10] + bad + good[10:])
            report = await pipeline.drain(30)
        assert report.complete
        assert without_acq(await stored(server.port)) == without_acq(good)
    dead = list(iter_dead_letters(tmp_path / "dead-letter.jsonl"))
    assert [d.record() for d in dead] == bad
    assert observer.dead_lettered == {"gen": 1}


async def _read_put_request(reader: asyncio.StreamReader) -> bytes:
    """One whole PUT/PUTA request: the header, the per-cid batches, the end guard."""
    data = bytearray(await reader.readexactly(HEADER.size))
    while True:
        cid_bytes = await reader.readexactly(INT32.size)
        data += cid_bytes
        if INT32.unpack(cid_bytes)[0] < 0:
            return bytes(data)
        size_bytes = await reader.readexactly(INT32.size)
        data += size_bytes + await reader.readexactly(INT32.unpack(size_bytes)[0])


async def test_poison_records_are_isolated_by_splitting_and_the_rest_delivered(tmp_path):
    """A peer in front of the real server refuses (ERROR, then close) any PUT with POISON."""
    refusals = []

    async with serve_async() as server:

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(server.host, server.port)
            try:
                while True:
                    request = await _read_put_request(reader)
                    if POISON in request:
                        refusals.append(len(request))
                        writer.write(HEADER.pack(-1, 0))
                        await writer.drain()
                        return  # TStorage closes the connection after an error
                    up_writer.write(request)
                    header = await up_reader.readexactly(HEADER.size)
                    body = await up_reader.readexactly(HEADER.unpack(header)[1])
                    writer.write(header + body)
                    await writer.drain()
            except asyncio.IncompleteReadError:
                pass  # the writer closed its connection
            finally:
                up_writer.close()
                writer.close()

        peer = await asyncio.start_server(handle, "127.0.0.1", 0)
        peer_port = peer.sockets[0].getsockname()[1]
        recs = records(40)
        poison = [Record(Key(1, 1000 + i, 7, 1), POISON + b"%d" % i) for i in range(2)]
        mixed = [*recs[:5], poison[0], *recs[5:30], poison[1], *recs[30:]]
        observer = WatchingObserver()
        pipeline = make_pipeline(tmp_path, peer_port, observer)
        pipeline.reconfigure(batch=BatchSettings(max_records=1000, flush_interval=0.05))
        async with pipeline:
            await pipeline.emit("gen", mixed)
            report = await pipeline.drain(30)
        peer.close()
        await peer.wait_closed()
        assert report.complete
        assert without_acq(await stored(server.port)) == without_acq(recs)
    dead = list(iter_dead_letters(tmp_path / "dead-letter.jsonl"))
    assert sorted(d.record() for d in dead) == poison
    assert {d.reason for d in dead} == {"refused by TStorage: ERROR"}
    assert observer.written == {"gen": 40}
    # Splitting is logarithmic: far fewer refusals than records.
    assert len(refusals) < 20


async def test_a_server_that_never_answers_times_out_and_is_retried_then_given_up(tmp_path):
    """A peer that accepts and reads but never answers: each attempt times out (transient)."""
    connections = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    peer = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    observer = WatchingObserver()
    pipeline = Pipeline(
        target=TargetSettings(port=port, timeout=0.2),
        batch=BATCH,
        queue=QueueSettings(),
        retry=RetrySettings(initial_backoff=0.01, max_backoff=0.01, give_up_after_attempts=2),
        dead_letters=DeadLetterFile(tmp_path / "dead-letter.jsonl"),
        observer=observer,
    )
    acked = []
    async with pipeline:
        await pipeline.emit("gen", records(5), lambda: acked.append(1))
        report = await pipeline.drain(30)
    peer.close()
    await peer.wait_closed()
    assert report.complete
    assert len(connections) == 2  # a fresh connection for the retry
    dead = list(iter_dead_letters(tmp_path / "dead-letter.jsonl"))
    assert [d.record() for d in dead] == records(5)
    assert dead[0].reason == (
        "gave up after 2 attempts: timeout: no answer within 0.2 s (tstorage.timeout)"
    )
    assert acked == [1]
