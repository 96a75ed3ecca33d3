"""Benchmark of tstorage-server: PUT ingest and GET throughput, records per second.

    .venv/bin/python benchmarks/bench_server.py [--records 1000000] [--put-size 100000]

The server runs as a subprocess (its own interpreter and GIL, as in production). The client
side sends pre-encoded request bytes over a plain socket and reads raw response bytes, so the
numbers measure the server, not a client library. When ``tstorage_client.channel`` exists the
same workload is also run through ``Channel`` (the project's client) for end-to-end numbers.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable

from tstorage_client.protocol.wire import HEADER, INT32, KEY, RequestType
from tstorage_client.record import Key
from tstorage_server.testing import ServerProcess

PAYLOAD = struct.pack("<d", 1.5)  # 8 bytes
_RECORD = struct.Struct("<iqiq")  # n, mid, moid, cap


def encode_put(first: int, count: int, cid: int = 1, series: int = 100) -> bytes:
    """A PUT request of ``count`` records with 8-byte payloads, spread over ``series`` mids."""
    n = 20 + len(PAYLOAD)
    body = b"".join(
        _RECORD.pack(n, i % series, 7, i) + PAYLOAD for i in range(first, first + count)
    )
    return (
        HEADER.pack(RequestType.PUT, 0) + struct.pack("<ii", cid, len(body)) + body + INT32.pack(-1)
    )


def encode_range(rtype: int, key_min: Key, key_max: Key) -> bytes:
    return HEADER.pack(rtype, 64) + KEY.pack(*key_min) + KEY.pack(*key_max)


def recv_exactly(sock: socket.socket, size: int) -> None:
    """Read and discard exactly ``size`` bytes."""
    view = memoryview(bytearray(1 << 20))
    while size:
        got = sock.recv_into(view, min(size, len(view)))
        if not got:
            raise ConnectionError("server closed the connection")
        size -= got


def raw_put(port: int, requests: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for request in requests:
            sock.sendall(request)
            recv_exactly(sock, 12 + 16)


def raw_get(port: int, records: int) -> None:
    request = encode_range(RequestType.GET, Key.min(), Key.max())
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        recv_exactly(sock, 12 + records * (4 + 32 + len(PAYLOAD)) + 4 + 12 + 8)


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def run_raw(label: str, data_dir: str | None, records: int, put_size: int) -> list[str]:
    requests = [encode_put(i, min(put_size, records - i)) for i in range(0, records, put_size)]
    rows = []
    with ServerProcess(data_dir) as server:
        seconds = timed(lambda: raw_put(server.port, requests))
        rows.append(
            f"| PUT ingest, {label}, raw socket | {records:,} | {seconds:.2f} | {records / seconds:,.0f} |"
        )
        seconds = timed(lambda: raw_get(server.port, records))
        rows.append(
            f"| GET one range, {label}, raw socket | {records:,} | {seconds:.2f} | {records / seconds:,.0f} |"
        )
    return rows


def run_channel(label: str, data_dir: str | None, records: int, put_size: int) -> list[str]:
    try:
        from tstorage_client.channel import Channel
        from tstorage_client.record import Record
    except ImportError:
        return []
    batches = [
        [
            Record(Key(1, i % 100, 7, i), PAYLOAD)
            for i in range(first, min(first + put_size, records))
        ]
        for first in range(0, records, put_size)
    ]
    rows = []
    with ServerProcess(data_dir) as server:
        channel = Channel("127.0.0.1", server.port)
        channel.connect()
        try:

            def put_all() -> None:
                for batch in batches:
                    assert channel.put(batch)

            seconds = timed(put_all)
            rows.append(
                f"| PUT ingest, {label}, Channel.put | {records:,} | {seconds:.2f} | {records / seconds:,.0f} |"
            )
            result: list[int] = []

            def get_all() -> None:
                response = channel.get(Key.min(), Key.max())
                assert response, response
                result.append(len(response.data))

            seconds = timed(get_all)
            assert result == [records], result
            rows.append(
                f"| GET one range, {label}, Channel.get | {records:,} | {seconds:.2f} | {records / seconds:,.0f} |"
            )
        finally:
            channel.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--put-size", type=int, default=100_000, help="records per PUT request")
    parser.add_argument("--no-channel", action="store_true", help="raw socket numbers only")
    args = parser.parse_args()
    print(
        f"nproc={os.cpu_count()} python={sys.version.split()[0]} records={args.records:,} "
        f"put_size={args.put_size:,} payload={len(PAYLOAD)} B"
    )
    print("| workload | records | seconds | records/s |")
    print("|---|---:|---:|---:|")
    runs = [run_raw] if args.no_channel else [run_raw, run_channel]
    for run in runs:
        for row in run("memory", None, args.records, args.put_size):
            print(row, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for row in run("SQLite", tmp, args.records, args.put_size):
                print(row, flush=True)


if __name__ == "__main__":
    main()
