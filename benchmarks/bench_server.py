"""Benchmark of tstorage-server: PUT ingest and GET throughput, records per second.

    .venv/bin/python benchmarks/bench_server.py                 # issue 14 targets, 5 runs each
    .venv/bin/python benchmarks/bench_server.py --table [--records 1000000] [--put-size 100000]

Default ("targets"): for each backend one server; every run PUTs ONE request of ``--records``
records (8-byte ``<d`` payloads, spread over 100 meters, a fresh cid per run) through a raw
socket, then GETs exactly those records back; prints every run, then the median and range per
figure against the targets (memory ingest >= 1 M rec/s, SQLite ingest >= 500 k rec/s, GET >=
2 M rec/s).

``--small-puts N``: N PUTs of 100 records, each record of its own meter (a daemon's worst
case: one record per series per request), over one connection to a SQLite server, then
one GET of them.

``--table`` is the older per-workload table (issue 3). The server runs as a subprocess (its
own interpreter and GIL, as in production). Two clients:
"raw socket" sends pre-encoded request bytes and reads the response bytes without decoding,
so it measures the server alone; "Channel" is the project's client (tstorage_client.channel)
building Records and decoding them, i.e. what an integrator sees end to end.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import psutil

from tstorage_client.protocol.wire import HEADER, INT32, KEY, RequestType
from tstorage_client.record import Key, Record
from tstorage_server.testing import ServerProcess

PAYLOAD_FORMAT = "<d"  # 8-byte payloads
PAYLOAD = struct.pack(PAYLOAD_FORMAT, 1.5)
SERIES = 100  # records are spread over this many meters (mid)
_RECORD = struct.Struct("<iqiq")  # n, mid, moid, cap


def encode_put(first: int, count: int, cid: int = 1) -> bytes:
    """A PUT request of ``count`` records with 8-byte payloads, spread over ``SERIES`` mids."""
    n = 20 + len(PAYLOAD)
    body = b"".join(
        _RECORD.pack(n, i % SERIES, 7, i) + PAYLOAD for i in range(first, first + count)
    )
    header = HEADER.pack(RequestType.PUT, 0) + struct.pack("<ii", cid, len(body))
    return header + body + INT32.pack(-1)


def recv_exactly(sock: socket.socket, size: int) -> None:
    """Read and discard exactly ``size`` bytes."""
    view = memoryview(bytearray(1 << 20))
    while size:
        got = sock.recv_into(view, min(size, len(view)))
        if not got:
            raise ConnectionError("server closed the connection")
        size -= got


class Stopwatch:
    """Wall time of a workload and the CPU time the server process spent on it.

    On a shared machine the wall rate moves with the load of other processes; records per
    server CPU second does not (much), and tells what the server costs.
    """

    def __init__(self, server_pid: int) -> None:
        self.server = psutil.Process(server_pid)

    def _cpu(self) -> float:
        times = self.server.cpu_times()
        return float(times.user + times.system)

    def row(self, workload: str, records: int, func: Callable[[], object]) -> str:
        cpu = self._cpu()
        start = time.perf_counter()
        func()
        wall = time.perf_counter() - start
        # cpu_times() ticks in 10 ms steps: a GET from memory may register as zero.
        cpu = max(self._cpu() - cpu, 0.01)
        return (
            f"| {workload} | {records:,} | {wall:.2f} | {records / wall:,.0f} "
            f"| {cpu:.2f} | {records / cpu:,.0f} |"
        )


def run_raw(label: str, watch: Stopwatch, port: int, records: int, put_size: int) -> list[str]:
    requests = [encode_put(i, min(put_size, records - i)) for i in range(0, records, put_size)]
    get_request = HEADER.pack(RequestType.GET, 64) + KEY.pack(*Key.min()) + KEY.pack(*Key.max())
    get_size = 12 + records * (4 + 32 + len(PAYLOAD)) + 4 + 12 + 8

    def put_all() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for request in requests:
                sock.sendall(request)
                recv_exactly(sock, 12 + 16)

    def get_all() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(get_request)
            recv_exactly(sock, get_size)

    latencies: list[float] = []
    ingesting = threading.Event()
    ingesting.set()

    def probe_event_loop() -> None:
        """GET_ACQ round trips on a second connection while the ingest runs."""
        request = HEADER.pack(RequestType.GET_ACQ, 64) + KEY.pack(*Key.min()) + KEY.pack(*Key.max())
        with socket.create_connection(("127.0.0.1", port)) as sock:
            while ingesting.is_set():
                start = time.perf_counter()
                sock.sendall(request)
                recv_exactly(sock, 12 + 8)
                latencies.append(time.perf_counter() - start)
                time.sleep(0.005)

    prober = threading.Thread(target=probe_event_loop)
    prober.start()
    try:
        put_row = watch.row(f"PUT ingest, {label}, raw socket", records, put_all)
    finally:
        ingesting.clear()
        prober.join()
    latencies.sort()
    print(
        f"  GET_ACQ latency during the {label} ingest: median "
        f"{latencies[len(latencies) // 2] * 1e3:.1f} ms, max {latencies[-1] * 1e3:.1f} ms "
        f"({len(latencies)} probes)",
        file=sys.stderr,
    )
    return [put_row, watch.row(f"GET one range, {label}, raw socket", records, get_all)]


def run_channel(label: str, watch: Stopwatch, port: int, records: int, put_size: int) -> list[str]:
    from tstorage_client.channel import Channel
    from tstorage_client.payload_type import StructPayloadType

    batches = [
        [
            Record(Key(2, i % SERIES, 7, i), 1.5)
            for i in range(first, min(first + put_size, records))
        ]
        for first in range(0, records, put_size)
    ]
    key_min, key_max = Key(2, *Key.min()[1:]), Key(3, *Key.max()[1:])
    with Channel("127.0.0.1", port, StructPayloadType(PAYLOAD_FORMAT)) as channel:

        def put_all() -> None:
            for batch in batches:
                assert channel.put(batch)

        def get_all() -> None:
            response = channel.get(key_min, key_max)
            assert response, response
            assert len(response.data) == records

        return [
            watch.row(f"PUT ingest, {label}, Channel.put", records, put_all),
            watch.row(f"GET one range, {label}, Channel.get", records, get_all),
        ]


def backends() -> Iterator[tuple[str, int, Stopwatch]]:
    """(label, port, stopwatch) of a fresh server per backend, memory then SQLite."""
    for label in ("memory", "SQLite"):
        with (
            tempfile.TemporaryDirectory() as tmp,
            ServerProcess(None if label == "memory" else tmp) as server,
        ):
            assert server.process is not None
            yield label, server.port, Stopwatch(server.process.pid)


TARGETS = {
    "PUT ingest, memory": 1_000_000,
    "PUT ingest, SQLite": 500_000,
    "GET, memory": 2_000_000,
    "GET, SQLite": 2_000_000,
}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(watch: Stopwatch, func: Callable[[], object]) -> tuple[float, float]:
    """Wall seconds and server CPU seconds of ``func``."""
    cpu = watch._cpu()
    start = time.perf_counter()
    func()
    wall = time.perf_counter() - start
    return wall, watch._cpu() - cpu


def run_targets(records: int, repeat: int) -> None:
    """One large PUT, then a GET of it, ``repeat`` times per backend; medians against targets."""
    print(
        f"nproc={os.cpu_count()} python={sys.version.split()[0]} sqlite={sqlite3.sqlite_version} "
        f"records per PUT={records:,} payload={len(PAYLOAD)} B series={SERIES} runs={repeat}"
    )
    print(f"start: {load()}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in TARGETS}
    rss_after: dict[str, int] = {}
    for label, port, watch in backends():
        for run in range(repeat):
            cid = 10 + run  # a fresh cid per run: every PUT is new data, every GET its own
            request = encode_put(0, records, cid)
            get_request = (
                HEADER.pack(RequestType.GET, 64)
                + KEY.pack(cid, *Key.min()[1:])
                + KEY.pack(cid + 1, *Key.max()[1:])
            )
            get_size = 12 + records * (4 + 32 + len(PAYLOAD)) + 4 + 12 + 8
            with socket.create_connection(("127.0.0.1", port)) as sock:

                def put(sock: socket.socket = sock, request: bytes = request) -> None:
                    sock.sendall(request)
                    recv_exactly(sock, 12 + 16)

                def get(
                    sock: socket.socket = sock,
                    request: bytes = get_request,
                    size: int = get_size,
                ) -> None:
                    sock.sendall(request)
                    recv_exactly(sock, size)

                put_time = timed(watch, put)
                get_time = timed(watch, get)
            results[f"PUT ingest, {label}"].append(put_time)
            results[f"GET, {label}"].append(get_time)
            for name, (wall, cpu) in (
                (f"PUT ingest, {label}", put_time),
                (f"GET, {label}", get_time),
            ):
                print(
                    f"  run {run + 1}: {name:<20} {records / wall:>12,.0f} rec/s wall"
                    f"  ({wall:.3f} s, server CPU {cpu:.2f} s)",
                    flush=True,
                )
        rss_after[label] = watch.server.memory_info().rss
    print(f"end: {load()}")
    for label, rss in rss_after.items():
        print(f"server RSS after {repeat} x {records:,} records, {label}: {rss / 2**20:,.0f} MiB")
    print()
    print("| figure | target | median rec/s (wall) | range | median server CPU s | verdict |")
    print("|---|---:|---:|---:|---:|---|")
    for name, target in TARGETS.items():
        rates = [records / wall for wall, _ in results[name]]
        cpus = [cpu for _, cpu in results[name]]
        median = statistics.median(rates)
        verdict = "met" if median >= target else "NOT met"
        print(
            f"| {name} | >= {target:,} | {median:,.0f} | {min(rates):,.0f} - {max(rates):,.0f} "
            f"| {statistics.median(cpus):.2f} | {verdict} |"
        )


def run_small_puts(puts: int) -> None:
    """``puts`` PUTs of ``SERIES`` records, one per meter, then a GET of them (SQLite)."""
    print(f"nproc={os.cpu_count()} python={sys.version.split()[0]} sqlite={sqlite3.sqlite_version}")
    print(f"start: {load()}")
    requests = [encode_put(i * SERIES, SERIES, 5) for i in range(puts)]
    total = puts * SERIES
    get_request = (
        HEADER.pack(RequestType.GET, 64) + KEY.pack(5, *Key.min()[1:]) + KEY.pack(6, *Key.max()[1:])
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(tmp) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        assert server.process is not None
        watch = Stopwatch(server.process.pid)

        def put_all() -> None:
            for request in requests:
                sock.sendall(request)
                recv_exactly(sock, 12 + 16)

        def get() -> None:
            sock.sendall(get_request)
            recv_exactly(sock, 12 + total * (4 + 32 + len(PAYLOAD)) + 4 + 12 + 8)

        wall, cpu = timed(watch, put_all)
        print(
            f"{puts:,} PUTs x {SERIES} records (one per meter): {puts / wall:,.0f} PUT/s,"
            f" {total / wall:,.0f} rec/s wall, server CPU {cpu:.2f} s"
        )
        wall, cpu = timed(watch, get)
        print(f"GET of those {total:,}: {total / wall:,.0f} rec/s wall, server CPU {cpu:.2f} s")
    print(f"end: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--put-size", type=int, default=100_000, help="records per PUT (--table)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (targets)")
    parser.add_argument("--table", action="store_true", help="the issue-3 per-workload table")
    parser.add_argument("--small-puts", type=int, default=0, help="N small PUTs (SQLite)")
    args = parser.parse_args()
    if args.small_puts:
        run_small_puts(args.small_puts)
        return
    if not args.table:
        run_targets(args.records, args.repeat)
        return
    print(
        f"nproc={os.cpu_count()} python={sys.version.split()[0]} records={args.records:,} "
        f"put_size={args.put_size:,} payload={len(PAYLOAD)} B"
    )
    print("| workload | records | wall s | records/s | server CPU s | records/server-CPU-s |")
    print("|---|---:|---:|---:|---:|---:|")
    # One fresh server per backend; the raw client writes cid 1, the Channel cid 2.
    for label, port, watch in backends():
        for run in (run_raw, run_channel):
            for line in run(label, watch, port, args.records, args.put_size):
                print(line, flush=True)


if __name__ == "__main__":
    main()
