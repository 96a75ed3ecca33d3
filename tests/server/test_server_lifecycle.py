"""Persistence, restarts, SIGKILL, SIGTERM and clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import time

import pytest
from server_raw import RawClient, encode_put

from tstorage_server.acq import AcqClock
from tstorage_server.storage.sqlite import DB_FILENAME, SqliteStorage
from tstorage_server.testing import ServerProcess, serve, serve_async


def test_records_survive_a_clean_restart(tmp_path) -> None:
    with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
        _, acq_min, acq_max = raw.put([((1, 2, 3, i, -1), b"kept") for i in range(100)])
    with serve(data_dir=tmp_path) as server, RawClient(server.port) as raw:
        result = raw.get()
        assert [key[4] for key, _ in result.records] == list(range(acq_min, acq_max + 1))
        status, acq_after, _ = raw.put([((1, 2, 3, 0, -1), b"next")])
        assert status == 0
        assert acq_after > acq_max


def test_acq_stays_monotonic_across_restarts_even_when_the_clock_is_behind() -> None:
    clock = AcqClock(last_assigned=10**18, clock=lambda: 5)  # the wall clock stepped back
    first = clock.assign(3)
    assert first == 10**18 + 1
    assert clock.assign(1) == first + 3
    acq0 = clock.stable()
    assert clock.assign(1) >= acq0


async def test_sqlite_persists_the_last_assigned_acq(tmp_path) -> None:
    storage = await SqliteStorage.open(str(tmp_path))
    put = storage.begin_put(with_acq=False)
    await put.add(1, [(28, 1, 1, 1, b"12345678")])
    _, acq_max = await put.commit()
    await storage.close()
    reopened = await SqliteStorage.open(str(tmp_path))
    try:
        assert reopened.clock.last_assigned == acq_max
        assert reopened.clock.assign(1) > acq_max
    finally:
        await reopened.close()


def test_acknowledged_put_survives_sigkill(tmp_path) -> None:
    records = [((1, 2, 3, i, -1), struct.pack("<d", i)) for i in range(1000)]
    with ServerProcess(tmp_path) as process:
        with RawClient(process.port) as raw:
            status, _acq_min, acq_max = raw.put(records)
            assert status == 0
        process.kill()  # SIGKILL straight after the acknowledgement
        assert process.process.returncode == -signal.SIGKILL
        process.start()
        with RawClient(process.port) as raw:
            result = raw.get()
            assert result.ok
            assert [(key[3], payload) for key, payload in result.records] == [
                (key[3], payload) for key, payload in records
            ]
            status, acq_next, _ = raw.put([((1, 2, 3, 0, -1), b"x")])
            assert acq_next > acq_max


def test_sigterm_exits_cleanly_and_checkpoints_the_database(tmp_path) -> None:
    with ServerProcess(tmp_path) as process, RawClient(process.port) as raw:
        assert raw.put([((1, 1, 1, 1, -1), b"x")])[0] == 0
        assert process.terminate() == 0
    events = [json.loads(line) for line in process.output if line.startswith("{")]
    assert [e["event"] for e in events if e["event"].startswith("server_")] == [
        "server_started",
        "server_stopped",
    ]
    # A clean stop folds the WAL back into the database file.
    wal = tmp_path / (DB_FILENAME + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_sigint_also_stops_the_server(tmp_path) -> None:
    with ServerProcess(None) as process:
        assert process.send_signal(signal.SIGINT) == 0


def test_logs_one_line_per_connection_open_close_and_failed_request(tmp_path) -> None:
    with ServerProcess(None) as process:
        with RawClient(process.port) as raw:
            raw.send(struct.pack("<iQ", 3, 0))
            assert raw.header() == (-1, 0)
        process.wait_for_output('"connection_close"')
        assert process.terminate() == 0
    events = [json.loads(line) for line in process.output if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names.count("connection_open") == 1
    assert names.count("connection_close") == 1
    failed = [e for e in events if e["event"] == "request_failed"]
    assert len(failed) == 1
    assert "unknown request type 3" in failed[0]["reason"]


async def test_stop_finishes_the_request_in_flight_then_closes(tmp_path) -> None:
    async with serve_async(data_dir=tmp_path) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        request = encode_put([((1, 1, 1, i, -1), b"in flight") for i in range(10)])
        writer.write(request[:30])
        await writer.drain()
        idle_reader, idle_writer = await asyncio.open_connection(server.host, server.port)
        # Wait (bounded) until the server has read the partial PUT: it is then mid-request.
        connections = server.server._connections
        deadline = asyncio.get_running_loop().time() + 30
        while not any(not c.idle for c in connections.values()) or len(connections) < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(server.server.stop())
        # The idle connection is closed at once...
        assert await asyncio.wait_for(idle_reader.read(), timeout=30) == b""
        # ...the one inside a request gets to finish it and receives its answer.
        writer.write(request[30:])
        status, size = struct.unpack("<iQ", await asyncio.wait_for(reader.readexactly(12), 30))
        assert (status, size) == (0, 16)
        await reader.readexactly(16)
        assert await asyncio.wait_for(reader.read(), timeout=30) == b""
        await stopping
        writer.close()
        idle_writer.close()
    async with serve_async(data_dir=tmp_path) as server:
        with RawClient(server.port) as raw:
            result = await asyncio.to_thread(raw.get)
            assert len(result.records) == 10


def test_cli_rejects_half_a_tls_configuration(tmp_path) -> None:
    process = ServerProcess(None, extra_args=["--tls-cert", os.fspath(tmp_path / "c.pem")])
    with pytest.raises(RuntimeError, match="tls"):
        process.start()


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path) -> None:
    with ServerProcess(tmp_path):
        second = ServerProcess(tmp_path)
        with pytest.raises(RuntimeError, match="in use by another tstorage-server"):
            second.start()
        assert second.process.wait(30) == 1


def test_sigkill_during_a_large_put_stores_none_of_it(tmp_path) -> None:
    # Large enough to be streamed into an open transaction (beyond the 16 MiB staging limit).
    request = encode_put([((1, 1, 1, i, -1), bytes(200)) for i in range(120_000)])
    with ServerProcess(tmp_path) as process:
        with RawClient(process.port) as raw, RawClient(process.port) as observer:
            raw.send(request[: len(request) * 9 // 10])
            # While a PUT holds assigned-but-uncommitted acqs, acq0 stands still at the first
            # of them (it otherwise follows the clock): then the transaction is open. Poll for
            # that (bounded), and kill the server mid-transaction.
            deadline = time.monotonic() + 60
            while observer.get_acq()[1] != observer.get_acq()[1]:
                assert time.monotonic() < deadline, "the server never started writing"
            process.kill()
        process.start()
        with RawClient(process.port) as raw:
            result = raw.get()
            assert result.ok
            assert result.records == []
