"""Records per second of tstorage_client: put and get, with and without sockets.

(a) core: encode_put alone, and GetResponseParser alone over a pre-encoded response;
(b) loopback: Channel / AsyncChannel against a peer in another process that is fast enough
    not to be the bottleneck: for PUT it skips the batches by their headers and answers OK,
    for GET it replays a pre-encoded response.

Payloads: StructPayloadType("<d"), TuplePayloadType("<if?"), BytesPayloadType (100-byte
payloads) and NumpyPayloadType("<f8"). Record objects are built before a put is timed, and
every record of a get is fully built (Key and Record objects, or the structured array).
get_iter figures count the Record items (every record is built). Each figure is the best of
``--repeat`` runs.

    python benchmarks/bench_client.py [--records N] [--repeat R] [--only SUBSTRING]
                                      [--clock wall|cpu]

``--targets`` instead measures the cases of issue 14 (public API only, loopback, both
channels) and prints them beside the reference client's figures, with the median and the
range of ``--repeat`` runs, and the peak RSS (VmHWM) of a get() of 2 M records in a fresh
process per channel, and beside it the peak of a process holding the same records in the
reference's documented data model (slotted dataclasses Key and Record); the RSS row is
judged against that model (the issue's target is ≤ 1.0x the reference):

    python benchmarks/bench_client.py --targets [--repeat R] [--clock wall|cpu]

``--ceiling`` measures what loopback TCP itself allows for the numpy rows (no client code):
a raw ``sendall`` of the bytes of 1 M GET rows (44 MB) received with ``recv_into`` in the
other process, into one reused buffer and into fresh memory each time (as a get must: a
``numpy.empty`` array, and an anonymous mapping with huge pages as the client uses), and
the 32 MB of a 1 M-row PUT sent to a peer that ``recv_into``s a reused buffer:

    python benchmarks/bench_client.py --ceiling [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import multiprocessing
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tstorage_client.channel import Channel
from tstorage_client.channel_async import AsyncChannel
from tstorage_client.numpy_payload import NumpyPayloadType
from tstorage_client.payload_type import (
    BytesPayloadType,
    PayloadType,
    StructPayloadType,
    TuplePayloadType,
)
from tstorage_client.protocol.client import (
    NEED_DATA,
    GetResponseParser,
    RecordsBatch,
    encode_put,
)
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseAcq

try:
    from tstorage_client.protocol.codecs import codec_for
except ImportError:  # before issue 9 (to measure "before" with this script)
    from tstorage_client.protocol._codec import codec_for  # type: ignore[attr-defined,no-redef]

HEADER = struct.Struct("<iQ")
I32 = struct.Struct("<i")
ROW = struct.Struct("<iiqiqq")
PUT_OK = HEADER.pack(0, 16) + struct.pack("<qq", 1, 2)


# ------------------------------------------------------------------------ the fast peer


def _peer_main(listener: socket.socket, get_response: bytes) -> None:
    """Serve one connection: skip PUT batches by their headers, replay GET responses."""
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    start = end = 0

    def fill(count: int) -> None:
        nonlocal start, end
        if end - start >= count:
            return
        if start:
            buf[: end - start] = buf[start:end]
            end -= start
            start = 0
        while end < count:
            got = conn.recv_into(view[end:])
            if not got:
                raise EOFError
            end += got

    def take(st: struct.Struct) -> tuple[Any, ...]:
        nonlocal start
        fill(st.size)
        values = st.unpack_from(buf, start)
        start += st.size
        return values

    def skip(count: int) -> None:
        nonlocal start, end
        while count:
            if start == end:
                start = end = 0
                fill(1)
            step = min(count, end - start)
            start += step
            count -= step

    try:
        while True:
            kind, _ = take(HEADER)
            if kind in (1, 7):
                skip(64)
                conn.sendall(get_response)
                continue
            while take(I32)[0] >= 0:  # cid; a negative one is the end guard
                skip(take(I32)[0])
            conn.sendall(PUT_OK)
    except (EOFError, OSError):
        conn.close()


class Peer:
    """The fast peer in its own process (fork: it inherits the pre-encoded response)."""

    def __init__(self, get_response: bytes = b"") -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        context = multiprocessing.get_context("fork")
        self.process = context.Process(
            target=_peer_main, args=(self.listener, get_response), daemon=True
        )
        self.process.start()

    def close(self) -> None:
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
        self.listener.close()


# ------------------------------------------------------------------------ workloads


@dataclass
class Workload:
    name: str
    payload_type: PayloadType[Any]
    records: Any  # what put takes
    response: bytes  # the GET response carrying the same records
    count: int


def _response(rows: list[bytes], acq: int = 7) -> bytes:
    return b"".join(
        [HEADER.pack(0, 0), *rows, I32.pack(0), HEADER.pack(0, 8), struct.pack("<q", acq)]
    )


def _struct_workload(
    name: str, payload_type: PayloadType[Any], value: Callable[[int], Any], count: int, cids: int
) -> Workload:
    records = [Record(Key(i % cids, i, i % 100, 10**12 + i), value(i)) for i in range(count)]
    rows = []
    for i, (key, val) in enumerate((r.key, r.value) for r in records):
        payload = payload_type.to_bytes(val)
        rows.append(ROW.pack(32 + len(payload), *key[:4], 10**15 + i) + payload)
    return Workload(name, payload_type, records, _response(rows), count)


def _wire_dtype(payload: tuple[str, str]) -> list[tuple[str, str]]:
    """The numpy layout of GET response records (n, key, payload) for a fixed-size payload."""
    key = [("cid", "<i4"), ("mid", "<i8"), ("moid", "<i4"), ("cap", "<i8"), ("acq", "<i8")]
    return [("n", "<i4"), *key, payload]


def _numpy_workload(count: int) -> Workload:
    payload_type = NumpyPayloadType("<f8")
    # The payload field: "v0" as in the reference client ("value" in versions before it).
    value = "v0" if hasattr(payload_type, "parsing_dtype") else "value"
    array = np.zeros(
        count, [("cid", "<i4"), ("mid", "<i8"), ("moid", "<i4"), ("cap", "<i8"), (value, "<f8")]
    )
    array["cid"] = 1
    array["mid"] = np.arange(count)
    array["moid"] = np.arange(count) % 100
    array["cap"] = 10**12 + np.arange(count)
    array[value] = np.arange(count) / 2
    wire = np.zeros(count, _wire_dtype((value, "<f8")))
    wire["n"] = 40
    for name in ("cid", "mid", "moid", "cap", value):
        wire[name] = array[name]
    wire["acq"] = 10**15 + np.arange(count)
    return Workload("numpy <f8", payload_type, array, _response([wire.tobytes()]), count)


def workloads(count: int) -> list[Workload]:
    return [
        _struct_workload(
            'StructPayloadType("<d")', StructPayloadType("<d"), lambda i: i / 2, count, 1
        ),
        _struct_workload(
            'StructPayloadType("<d"), 16 cids interleaved',
            StructPayloadType("<d"),
            lambda i: i / 2,
            count,
            16,
        ),
        _struct_workload(
            'TuplePayloadType("<if?")',
            TuplePayloadType("<if?"),
            lambda i: (i, 0.5, i % 2 == 0),
            count,
            1,
        ),
        _struct_workload(
            "BytesPayloadType (100 B)", BytesPayloadType(), lambda i: bytes(100), count // 4, 1
        ),
        _numpy_workload(count * 5),
    ]


# ------------------------------------------------------------------------ measurements

clock = time.perf_counter
"""Wall-clock time by default; ``--clock cpu`` uses this process's CPU time instead (the
peer's work excluded), which is steadier on a machine shared with other work."""


def best_of(repeat: int, run: Callable[[], int]) -> float:
    """Best records/s of ``repeat`` runs; ``run`` returns the number of records it handled."""
    best = 0.0
    for _ in range(repeat):
        start = clock()
        handled = run()
        best = max(best, handled / (clock() - start))
    return best


def core_put(work: Workload) -> int:
    codec = codec_for(work.payload_type)
    total = sum(map(len, encode_put(codec, work.records)))
    assert total > 0
    return work.count


def core_get(work: Workload) -> int:
    parser = GetResponseParser(codec_for(work.payload_type))
    chunk = 1 << 20
    data = work.response
    batches = []
    for at in range(0, len(data) + chunk, chunk):
        if at < len(data):
            parser.feed(data[at : at + chunk])
        else:
            parser.feed_eof()
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, RecordsBatch):
                batches.append(event.records)
            else:
                assert isinstance(event, ResponseAcq)
                assert event.is_ok(), event
                return sum(map(len, batches))
    raise AssertionError("no final response")


def loopback_put(work: Workload, channel: Channel[Any]) -> int:
    response = channel.put(work.records)
    assert response.is_ok(), response
    return work.count


def _count(data: Any) -> int:
    """Records in a get's data: a list of records, or (numpy) arrays or a list of arrays."""
    if isinstance(data, list) and data and isinstance(data[0], np.ndarray):
        return sum(map(len, data))
    return len(data)


def loopback_get(work: Workload, channel: Channel[Any]) -> int:
    response = channel.get(Key.min(), Key.max())
    assert response.is_ok(), response
    assert _count(response.data) == work.count
    return work.count


def loopback_get_iter(work: Workload, channel: Channel[Any]) -> int:
    # Counts Record items: get_iter ends with its final response (in versions that have it).
    count = sum(1 for item in channel.get_iter(Key.min(), Key.max()) if isinstance(item, Record))
    assert count == work.count
    return count


def async_loopback(work: Workload, port: int, repeat: int) -> tuple[float, float, float]:
    async def main() -> tuple[float, float, float]:
        async with AsyncChannel("127.0.0.1", port, work.payload_type) as channel:
            put = get = get_iter = 0.0
            for _ in range(repeat):
                start = clock()
                assert (await channel.put(work.records)).is_ok()
                put = max(put, work.count / (clock() - start))
                start = clock()
                response = await channel.get(Key.min(), Key.max())
                assert response.is_ok()
                assert _count(response.data) == work.count
                get = max(get, work.count / (clock() - start))
                # Records held while get_iter builds new ones would make each GC pass longer.
                del response
                start = clock()
                count = 0
                async for item in channel.get_iter(Key.min(), Key.max()):
                    if isinstance(item, Record):
                        count += 1
                assert count == work.count
                get_iter = max(get_iter, work.count / (clock() - start))
            return put, get, get_iter

    return asyncio.run(main())


def measure(work: Workload, repeat: int) -> list[float]:
    """Records/s: core put/get, loopback put/get/get_iter, async put/get/get_iter."""
    figures = [best_of(repeat, lambda: core_put(work)), best_of(repeat, lambda: core_get(work))]
    peer = Peer(work.response)
    try:
        with Channel("127.0.0.1", peer.port, work.payload_type) as channel:
            figures.append(best_of(repeat, lambda: loopback_put(work, channel)))
            figures.append(best_of(repeat, lambda: loopback_get(work, channel)))
            figures.append(best_of(repeat, lambda: loopback_get_iter(work, channel)))
    finally:
        peer.close()
    peer = Peer(work.response)
    try:
        figures.extend(async_loopback(work, peer.port, repeat))
    finally:
        peer.close()
    return figures


# ------------------------------------------------------------------------ issue 14 targets

# (case, reference low, reference high, target, unit): targets as stated in issue 14.
TARGETS: list[tuple[str, float, float, float, str]] = [
    ("put <d, cids interleaved (cid = i % 10)", 1.1, 1.3, 2.6, "M rec/s"),
    ("put 100-byte payloads (BytesPayloadType), one cid", 1.3, 1.7, 3.4, "M rec/s"),
    ("put 100-byte payloads, cids interleaved", 1.0, 1.3, 2.6, "M rec/s"),
    ('numpy put, 1 M rows ("<f8" payload)', 20.0, 29.0, 58.0, "M rows/s"),
    ("numpy get, 1 M rows, one array at the end", 14.0, 20.0, 50.0, "M rows/s"),
    ("peak RSS of a get() of 2 M <d records", 479.0, 479.0, 479.0, "MiB"),
]


def _rows_response(count: int, cids: int, payload_size: int) -> bytes:
    """A GET response of ``count`` records of ``payload_size`` zero bytes (built with numpy)."""
    rows = np.zeros(count, _wire_dtype(("payload", f"V{payload_size}")))
    rows["n"] = 32 + payload_size
    rows["cid"] = np.arange(count) % cids
    rows["mid"] = np.arange(count)
    rows["moid"] = np.arange(count) % 100
    rows["cap"] = 10**12 + np.arange(count)
    rows["acq"] = 10**15 + np.arange(count)
    return _response([rows.tobytes()])


def _stats(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[0], ordered[-1]


def _timed(repeat: int, run: Callable[[], int]) -> list[float]:
    rates = []
    for _ in range(repeat):
        start = clock()
        handled = run()
        rates.append(handled / (clock() - start) / 1e6)
    return rates


def _numpy_get_one_array(channel: Channel[Any], count: int) -> int:
    response = channel.get(Key.min(), Key.max())
    assert response.is_ok(), response
    data: Any = response.data
    array = data[0] if len(data) == 1 else np.concatenate(data)
    assert len(array) == count
    return count


def _target_runs(work: Workload, repeat: int, kind: str) -> tuple[list[float], list[float]]:
    """(Channel rates, AsyncChannel rates) of ``kind`` ("put" or "get") in M/s."""
    peer = Peer(work.response)
    try:
        with Channel("127.0.0.1", peer.port, work.payload_type) as channel:
            if kind == "put":
                sync = _timed(repeat, lambda: loopback_put(work, channel))
            else:
                sync = _timed(repeat, lambda: _numpy_get_one_array(channel, work.count))
    finally:
        peer.close()

    async def run_async(port: int) -> list[float]:
        rates = []
        async with AsyncChannel("127.0.0.1", port, work.payload_type) as channel:
            for _ in range(repeat):
                start = clock()
                if kind == "put":
                    assert (await channel.put(work.records)).is_ok()
                else:
                    response = await channel.get(Key.min(), Key.max())
                    assert response.is_ok()
                    data: Any = response.data
                    array = data[0] if len(data) == 1 else np.concatenate(data)
                    assert len(array) == work.count
                    del response, data, array
                rates.append(work.count / (clock() - start) / 1e6)
        return rates

    peer = Peer(work.response)
    try:
        asynchronous = asyncio.run(run_async(peer.port))
    finally:
        peer.close()
    return sync, asynchronous


_RSS_CHILD = """
import asyncio, sys
from tstorage_client.channel import Channel
from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import StructPayloadType
from tstorage_client.record import Key

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

port, kind = int(sys.argv[1]), sys.argv[2]
before = hwm()
if kind == "sync":
    with Channel("127.0.0.1", port, StructPayloadType("<d")) as channel:
        response = channel.get(Key.min(), Key.max())
else:
    async def main():
        async with AsyncChannel("127.0.0.1", port, StructPayloadType("<d")) as channel:
            return await channel.get(Key.min(), Key.max())
    response = asyncio.run(main())
assert response.is_ok(), response.status
print(before, hwm(), len(response.data))
"""


_MODEL_CHILD = """
import struct, sys
from dataclasses import dataclass
from itertools import repeat

@dataclass(order=True, frozen=True, slots=True)
class Key:
    cid: int = -1
    mid: int = -1
    moid: int = -1
    cap: int = -1
    acq: int = -1

@dataclass(order=True, frozen=True, slots=True)
class Record:
    key: Key
    value: float

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

count = int(sys.argv[1])
row = struct.Struct("<iqiqqd")
new, setattr_ = object.__new__, object.__setattr__
before = hwm()
data = []
for start in range(0, count, 65536):
    stop = min(start + 65536, count)
    chunk = b"".join(
        row.pack(0, i, i % 100, 10**12 + i, 10**15 + i, 0.0) for i in range(start, stop)
    )
    for cid, mid, moid, cap, acq, value in row.iter_unpack(chunk):
        key = new(Key)
        for name, field in zip(("cid", "mid", "moid", "cap", "acq"), (cid, mid, moid, cap, acq)):
            setattr_(key, name, field)
        record = new(Record)
        setattr_(record, "key", key)
        setattr_(record, "value", value)
        data.append(record)
    del chunk
print(before, hwm(), len(data))
"""
"""The reference client's documented data model (slotted, frozen dataclasses ``Key`` and
``Record``) holding the same values as the get() of :func:`_peak_rss`: a lower bound of the
reference's peak RSS on that workload (its receive buffers and transients excluded)."""


def _model_rss(count: int) -> tuple[float, float]:
    """VmHWM (MiB) of a fresh process holding ``count`` records in the reference's data model,
    and its VmHWM before building them."""
    out = subprocess.run(
        [sys.executable, "-c", _MODEL_CHILD, str(count)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout.split()
    assert int(out[2]) == count, out
    return int(out[1]) / 1024, int(out[0]) / 1024


def _peak_rss(count: int) -> tuple[float, float, float, float]:
    """VmHWM (MiB) of a fresh process after a get() of ``count`` <d records: sync, async;
    and the VmHWM of the same processes before the get."""
    response = _rows_response(count, 1, 8)
    figures = []
    for kind in ("sync", "async"):
        peer = Peer(response)
        try:
            out = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(peer.port), kind],
                check=True,
                capture_output=True,
                text=True,
                timeout=600,
            ).stdout.split()
        finally:
            peer.close()
        assert int(out[2]) == count, out
        figures.append((int(out[1]) / 1024, int(out[0]) / 1024))
    return figures[0][0], figures[1][0], figures[0][1], figures[1][1]


def _target_workloads(records: int) -> list[tuple[Workload, str]]:
    return [
        (
            _struct_workload(TARGETS[0][0], StructPayloadType("<d"), lambda i: i / 2, records, 10),
            "put",
        ),
        (
            _struct_workload(TARGETS[1][0], BytesPayloadType(), lambda i: bytes(100), records, 1),
            "put",
        ),
        (
            _struct_workload(TARGETS[2][0], BytesPayloadType(), lambda i: bytes(100), records, 10),
            "put",
        ),
        (_numpy_workload(1_000_000), "put"),
        (_numpy_workload(1_000_000), "get"),
    ]


def targets(records: int, repeat: int, clock_name: str) -> None:
    """Print the issue-14 table: reference, ours (Channel / AsyncChannel), ratio, target."""
    load = os.getloadavg()
    # How fast this machine runs plain Python right now: compare runs across machines/days.
    calibration = min(timeit.repeat("sum(range(10**6))", number=1, repeat=20)) * 1e3
    print(
        f"calibration: sum(range(10**6)) takes {calibration:.1f} ms (best of 20)\n"
        f"nproc: {os.cpu_count()}, Python {sys.version.split()[0]}, records per put case:"
        f" {records:,}, {repeat} runs per figure (median, [min-max]), {clock_name} clock,"
        f" load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print("| case | reference | ours: Channel | ours: AsyncChannel | ratio | target | met? |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for (work, kind), (case, low, high, target, unit) in zip(
        _target_workloads(records), TARGETS, strict=False
    ):
        sync, asynchronous = _target_runs(work, repeat, kind)
        (sm, slo, shi), (am, alo, ahi) = _stats(sync), _stats(asynchronous)
        worst = min(sm, am)
        print(
            f"| {case} | {low:g}-{high:g} {unit} | {sm:.2f} [{slo:.2f}-{shi:.2f}]"
            f" | {am:.2f} [{alo:.2f}-{ahi:.2f}] | {worst / high:.2f}x | ≥ {target:g}"
            f" | {'yes' if worst >= target else 'no'} |",
            flush=True,
        )
    # The target is a ratio (≤ 1.0x the reference). Its 479 MiB came from a lighter
    # workload than this one (four distinct non-small ints per record here), so the ratio is
    # taken against the reference's own data model holding these very records: a lower
    # bound of the reference's peak (its receive buffers and transients not counted).
    case, _, high, _, unit = TARGETS[-1]
    model, model_before = _model_rss(2_000_000)
    sync_rss, async_rss, sync_before, async_before = _peak_rss(2_000_000)
    worst = max(sync_rss, async_rss)
    print(
        f"| {case} | ≥ {model:.0f} {unit} (its data model, these records; the issue's run:"
        f" {high:g}) | {sync_rss:.0f} (before the get: {sync_before:.0f})"
        f" | {async_rss:.0f} (before: {async_before:.0f}) | {worst / model:.2f}x | ≤ 1.0x"
        f" | {'yes' if worst <= model else 'no'} |"
    )
    print(
        f"\nthe reference's data model (slotted dataclasses Key and Record) holding the same"
        f" 2 M records: {model:.0f} MiB (before: {model_before:.0f}), a lower bound of the"
        f" reference's peak on this workload; against the issue's {high:g} MiB: "
        f"{worst / high:.2f}x"
    )
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def _ceiling_peer(listener: socket.socket, get_size: int, put_size: int, rounds: int) -> None:
    """Per round: read one byte, send ``get_size`` bytes, receive ``put_size``, answer b"k"."""
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = bytes(get_size)
    sink = memoryview(bytearray(4 << 20))
    for _ in range(rounds):
        conn.recv(1)
        conn.sendall(data)
        got = 0
        while got < put_size:
            got += conn.recv_into(sink[: min(len(sink), put_size - got)])
        conn.sendall(b"k")
    conn.close()


def ceiling(repeat: int) -> None:
    """Loopback TCP alone (no client code): GB/s, and the rows/s they allow for numpy."""
    get_size, put_size = 44 * 1_000_000, 32 * 1_000_000  # 1 M GET rows, 1 M PUT rows
    rounds = 3 * repeat
    listener = socket.create_server(("127.0.0.1", 0))
    process = multiprocessing.get_context("fork").Process(
        target=_ceiling_peer, args=(listener, get_size, put_size, rounds), daemon=True
    )
    process.start()
    sock = socket.create_connection(listener.getsockname()[:2])
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reused = memoryview(bytearray(get_size))
    payload = memoryview(bytes(put_size))
    rates: dict[str, list[float]] = {
        "get, reused buffer": [],
        "get, fresh np.empty": [],
        "get, fresh mapping, huge pages": [],
    }
    puts: list[float] = []
    for round_ in range(rounds):
        kind = list(rates)[round_ % 3]
        start = clock()
        sock.send(b"x")
        # Fresh memory each time is what a get that returns its array must pay for (page
        # faults); the client's get receives into a mapping with huge pages, like the last.
        if kind == "get, fresh np.empty":
            target = memoryview(np.empty(get_size, np.uint8).data)
        elif kind == "get, fresh mapping, huge pages":
            mapping = mmap.mmap(-1, get_size, flags=mmap.MAP_PRIVATE)
            mapping.madvise(mmap.MADV_HUGEPAGE)
            target = memoryview(mapping)
        else:
            target = reused
        got = 0
        while got < get_size:
            got += sock.recv_into(target[got:])
        rates[kind].append(get_size / (clock() - start) / 1e9)
        del target
        start = clock()
        sock.sendall(payload)
        assert sock.recv(1) == b"k"
        puts.append(put_size / (clock() - start) / 1e9)
    sock.close()
    process.join(30)
    listener.close()
    print(f"nproc: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| direction | GB/s median [min-max] | M rows/s it allows |")
    print("|---|---:|---:|")
    for name, values in [*rates.items(), ("put", puts)]:
        median, low, high = _stats(values)
        row = 32 if name == "put" else 44
        print(f"| {name} | {median:.2f} [{low:.2f}-{high:.2f}] | {median * 1e3 / row:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="records per workload")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--only", default="", help="only workloads whose name contains this")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="records per wall or CPU second"
    )
    parser.add_argument(
        "--targets", action="store_true", help="the cases of issue 14 beside the reference"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="what loopback TCP allows for the numpy rows"
    )
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.ceiling:
        ceiling(args.repeat)
        return
    if args.targets:
        targets(min(args.records, 1_000_000), args.repeat, args.clock)
        return
    print(
        f"nproc: {os.cpu_count()}, records: {args.records}, best of {args.repeat}, "
        f"{args.clock} clock\n"
    )
    print(
        "| payload | records | core put | core get | loopback put | loopback get"
        " | loopback get_iter | async put | async get | async get_iter |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for work in workloads(args.records):
        if args.only in work.name:
            cells = " | ".join(f"{value / 1e6:.2f} M/s" for value in measure(work, args.repeat))
            print(f"| {work.name} | {work.count:,} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
