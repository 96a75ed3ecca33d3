"""Benchmark of the disk spool: appends/s and MB/s, fsync per batch vs per interval.

For each batch size and fsync policy, one task appends batches as fast as the spool takes
them (with ``fsync="interval"`` each append's ``durable()`` is awaited concurrently, as the
pipeline does before acknowledging sources), while a ticker task measures how late the event
loop runs its 5 ms timer (the stall the spool imposes on everything else in the daemon).
Then the backlog is drained with ``read()`` + ``commit()``.

    .venv/bin/python benchmarks/bench_spool.py --dir /var/tmp/spool-bench

The directory must be on the disk being measured (not tmpfs).  Results go to
benchmarks/RESULTS.md by hand, with the command line and ``nproc``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import structlog

from tstoraged.spool import FsyncPolicy, Spool

SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
_TICK = 0.005


@dataclass
class Result:
    policy: str
    batch_bytes: int
    batches: int
    append_s: float
    drain_s: float
    tail_s: float
    max_lag_ms: float
    p99_lag_ms: float

    def row(self) -> str:
        mib = self.batches * self.batch_bytes / (1 << 20)
        return (
            f"| {self.policy:8} | {self.batch_bytes >> 10:5} KiB | {self.batches:5} "
            f"| {self.batches / self.append_s:8.0f} | {mib / self.append_s:7.1f} "
            f"| {mib / self.drain_s:7.1f} | {self.tail_s * 1000:6.0f} "
            f"| {self.p99_lag_ms:6.1f} | {self.max_lag_ms:6.1f} |"
        )


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """Record how late a periodic timer fires: what the spool costs the rest of the loop."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + _TICK
        await asyncio.sleep(_TICK)
        lags.append(max(0.0, loop.time() - due))


async def idle_lag(seconds: float = 3.0) -> tuple[float, float]:
    """p99 and max timer lateness of an idle loop: the noise floor of the lag columns."""
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await tick
    lags.sort()
    return lags[int(len(lags) * 0.99)] * 1000, lags[-1] * 1000


async def run_one(
    directory: str, policy: FsyncPolicy, batch_bytes: int, total_bytes: int, seconds: float
) -> Result:
    shutil.rmtree(directory, ignore_errors=True)
    spool = await Spool.open(
        directory,
        fsync=policy,
        fsync_interval=1.0,
        max_size=4 << 30,
        segment_size=64 << 20,
    )
    payload = os.urandom(batch_bytes)
    meta = {"records": batch_bytes // 16, "sources": {"bench": batch_bytes // 16}}
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(lags, stop))
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    batches = 0
    while batches * batch_bytes < total_bytes and time.perf_counter() - start < seconds:
        seq = await spool.append(payload, meta)
        if policy == "interval":
            waiter = asyncio.create_task(spool.durable(seq))
            pending.add(waiter)
            waiter.add_done_callback(pending.discard)
        batches += 1
    append_s = time.perf_counter() - start
    # With fsync="interval" the last batches become durable at the next flush (<= 1 s later);
    # that wait is latency, not throughput, so it is reported separately.
    await asyncio.gather(*pending)
    tail_s = time.perf_counter() - start - append_s

    start = time.perf_counter()
    drained = 0
    async for entry in spool.read(follow=False):
        await spool.commit(entry.seq)
        drained += 1
    drain_s = time.perf_counter() - start
    stop.set()
    await tick
    await spool.close()
    assert drained == batches
    lags.sort()
    return Result(
        policy,
        batch_bytes,
        batches,
        append_s,
        drain_s,
        tail_s,
        max_lag_ms=lags[-1] * 1000 if lags else 0.0,
        p99_lag_ms=lags[int(len(lags) * 0.99)] * 1000 if lags else 0.0,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="spool directory (on the disk to measure)")
    parser.add_argument("--mib", type=int, default=256, help="MiB appended per run")
    parser.add_argument("--seconds", type=float, default=10.0, help="time cap per run")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    base = args.dir or tempfile.mkdtemp(prefix="spool-bench-", dir=os.getcwd())
    directory = os.path.join(base, "spool")
    print(f"directory: {directory}, nproc: {os.cpu_count()}")
    print(
        "| fsync    | batch     | count | appends/s | MiB/s in | MiB/s out | last durable ms "
        "| loop lag p99 ms | max ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    p99, worst = await idle_lag()
    print(f"| idle loop (noise floor) | | | | | | | {p99:6.1f} | {worst:6.1f} |")
    try:
        for policy in ("batch", "interval"):
            for size in SIZES:
                result = await run_one(directory, policy, size, args.mib << 20, args.seconds)
                print(result.row(), flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
