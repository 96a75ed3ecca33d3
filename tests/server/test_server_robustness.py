"""Bad input, many clients, idle and connection limits: the server stays up and correct."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_raw import RawClient, encode_get, encode_get_acq, encode_put, vectors

from tstorage_client.protocol.server import encode_error
from tstorage_server.testing import RunningServer, serve, serve_async

VECTORS = vectors()
VALID_REQUESTS = [
    bytes.fromhex(case["hex"])
    for case in VECTORS.values()
    if case["direction"] == "request" and case["meaning"]["type"] != "INVALID"
]
ERROR = struct.pack("<iQ", -1, 0)


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def fuzz_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One server per backend that every fuzz example hits (it must survive them all)."""
    data_dir = None if request.param == "memory" else tmp_path_factory.mktemp("fuzz")
    with serve(data_dir=data_dir, idle_timeout=5) as running:
        yield running


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and read everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already refused and closed: fine
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
        return reply


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for position, value in flips:
        if buf:
            buf[position % len(buf)] = value
    return bytes(buf if cut is None else buf[: cut % (len(buf) + 1)])


def assert_still_serves_a_normal_client(port: int) -> None:
    with RawClient(port) as raw:
        status, acq_min, _ = raw.put([((7, 7, 7, 7, -1), b"canary")])
        assert status == 0
        result = raw.get([7, 7, 7, 7, acq_min], [8, 8, 8, 8, acq_min + 1])
        assert result.ok
        assert result.records == [((7, 7, 7, 7, acq_min), b"canary")]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.sampled_from(VALID_REQUESTS),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 10_000),
    tail=st.binary(max_size=64),
)
def test_mutated_frames_get_an_error_or_close_and_the_server_keeps_serving(
    fuzz_server: RunningServer, base: bytes, flips, cut, tail: bytes
) -> None:
    reply = exchange(fuzz_server.port, mutate(base, flips, cut) + tail)
    # Whatever came back is well formed: if the server refused, the refusal is its last word.
    if ERROR in reply:
        assert reply.endswith(ERROR)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=512))
def test_random_bytes_never_break_the_server(fuzz_server: RunningServer, data: bytes) -> None:
    exchange(fuzz_server.port, data)


def test_after_the_fuzzing_the_server_still_serves_correctly(fuzz_server: RunningServer) -> None:
    assert_still_serves_a_normal_client(fuzz_server.port)


def test_huge_announced_sizes_are_refused_at_once_without_allocation(server: RunningServer) -> None:
    with RawClient(server.port) as raw:
        # n = 2^31-1 would be 2 GiB; the server must refuse right away, not wait for the bytes.
        raw.send(struct.pack("<iQ", 5, 0) + struct.pack("<iii", 1, 2**31 - 1, 2**31 - 1))
        assert raw.header() == (-1, 0)
        assert raw.at_eof()
    with RawClient(server.port) as raw:
        raw.send(struct.pack("<iQ", 1, 2**64 - 1))
        assert raw.header() == (-1, 0)
    assert_still_serves_a_normal_client(server.port)


def test_a_bad_client_does_not_disturb_a_concurrent_good_one(server: RunningServer) -> None:
    with RawClient(server.port) as good, RawClient(server.port) as bad:
        good.send(encode_put([((1, 1, 1, 1, -1), b"half")])[:20])  # a PUT in progress
        bad.send(bytes.fromhex(VECTORS["unknown_request_type"]["hex"]))
        assert bad.header() == (-1, 0)
        good.send(encode_put([((1, 1, 1, 1, -1), b"half")])[20:])
        assert good.put_response()[0] == 0
        assert [p for _, p in good.get().records] == [b"half"]


async def one_async_client(port: int, cid: int, rounds: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(rounds):
            writer.write(encode_put([((cid, 1, 1, i, -1), f"{cid}:{i}".encode())]))
            status, size = struct.unpack("<iQ", await reader.readexactly(12))
            assert (status, size) == (0, 16)
            await reader.readexactly(16)
        writer.write(encode_get([cid, 0, 0, 0, 0], [cid + 1, 2, 2, 2**62, 2**63 - 1]))
        assert struct.unpack("<iQ", await reader.readexactly(12)) == (0, 0)
        payloads = []
        while (n := struct.unpack("<i", await reader.readexactly(4))[0]) != 0:
            payloads.append((await reader.readexactly(n))[32:])
        assert struct.unpack("<iQ", await reader.readexactly(12)) == (0, 8)
        await reader.readexactly(8)
        return payloads
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_many_concurrent_clients_each_read_back_exactly_their_writes(
    backend, tmp_path
) -> None:
    data_dir = None if backend == "memory" else tmp_path
    async with serve_async(data_dir=data_dir) as server:
        results = await asyncio.gather(
            *(one_async_client(server.port, cid, rounds=10) for cid in range(50))
        )
    for cid, payloads in enumerate(results):
        assert payloads == [f"{cid}:{i}".encode() for i in range(10)]


async def test_idle_connection_is_closed_after_the_idle_timeout() -> None:
    async with serve_async(idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        # The server closes: EOF arrives (bounded wait so a broken server fails, not hangs).
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""
        writer.close()


async def test_stalled_request_is_failed_after_the_idle_timeout() -> None:
    async with serve_async(idle_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(encode_get_acq()[:20])
        assert await asyncio.wait_for(reader.read(), timeout=30) == struct.pack("<iQ", -1, 0)
        writer.close()


async def test_active_connection_is_not_cut_by_the_idle_timeout() -> None:
    async with serve_async(idle_timeout=1.0) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        deadline = time.monotonic() + 2.5  # several idle periods of steady traffic
        while time.monotonic() < deadline:
            writer.write(encode_get_acq())
            assert struct.unpack("<iQ", await reader.readexactly(12)) == (0, 8)
            await reader.readexactly(8)
            await asyncio.sleep(0.1)
        writer.close()


async def test_connections_beyond_max_connections_are_refused_at_once() -> None:
    async with serve_async(max_connections=2) as server:
        first = await asyncio.open_connection(server.host, server.port)
        second = await asyncio.open_connection(server.host, server.port)
        # Both accepted connections answer (so the server has registered them)...
        for reader, writer in (first, second):
            writer.write(encode_get_acq())
            await reader.readexactly(20)
        reader, writer = await asyncio.open_connection(server.host, server.port)
        # ...and the third is refused politely: an error header, then the close.
        assert await asyncio.wait_for(reader.read(), timeout=30) == encode_error()
        for _, w in (first, second, (reader, writer)):
            w.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["staged", "streamed"])
def test_a_storage_failure_fails_that_put_only(tmp_path, monkeypatch, streamed: bool) -> None:
    from tstorage_server.storage import sqlite as sqlite_storage

    if streamed:
        monkeypatch.setattr(sqlite_storage, "STAGE_LIMIT_BYTES", 1000)
    real_insert = sqlite_storage._insert
    failures = [sqlite3.OperationalError("database or disk is full")]

    def insert_failing_once(*args):
        if failures:
            raise failures.pop()
        return real_insert(*args)

    monkeypatch.setattr(sqlite_storage, "_insert", insert_failing_once)
    records = [((1, 1, 1, i, -1), bytes(100)) for i in range(100)]
    with serve(data_dir=tmp_path) as server:
        with RawClient(server.port) as raw:
            assert raw.put(records)[0] != 0
            assert raw.at_eof()
        # Nothing of the failed PUT is stored, and the next PUT goes through.
        with RawClient(server.port) as raw:
            assert raw.get().records == []
            assert raw.put(records)[0] == 0
            assert len(raw.get().records) == 100
