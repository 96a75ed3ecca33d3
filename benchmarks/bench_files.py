"""Benchmark of the files source: records/s for 5-column CSV and JSON Lines, and RSS.

Stages measured, one core (the source, the mapping and the consumer share one event loop):

* ``source only``: reading, line splitting, decoding, CSV/JSON parsing and one ``context.map``
  call per row that returns a prebuilt record (the source's own cost).
* ``source+mapping``: a drop-directory file read, split, parsed and mapped through the core's
  compiled mapping; emitted records are counted and acknowledged at once.
* ``end-to-end`` (when the daemon's pipeline and the project's server are installed): the same
  source through the real pipeline into the in-memory server over loopback.

    .venv/bin/python benchmarks/bench_files.py --records 1000000

Results go to benchmarks/RESULTS.md by hand, with the command line and ``nproc``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import structlog
from tstoraged_files import FilesConfig, FilesSource

from tstorage_client.record import Key, Record
from tstoraged.mapping.compile import compile_mapping
from tstoraged.plugins import PluginManager
from tstoraged.source import Ack, SourceContext

MAPPING: dict[str, Any] = {
    "key": {"cid": 7, "mid": "{meter}", "moid": "{channel}"},
    "cap": {"field": "ts", "unit": "ms"},
    "payload": {"format": "<if", "fields": ["count", "temp"]},
}


def write_csv(path: Path, records: int) -> None:
    """``ts,meter,channel,count,temp`` lines, written as a repeated block (fast to make)."""
    block = 10_000
    with path.open("w") as f:
        f.write("ts,meter,channel,count,temp\n")
        for start in range(0, records, block):
            n = min(block, records - start)
            f.write(
                "".join(
                    f"{1_700_000_000_000 + i},{i % 50},{i % 8},{i},{20 + i % 100 / 10}\n"
                    for i in range(start, start + n)
                )
            )


def write_jsonl(path: Path, records: int) -> None:
    """The same rows as JSON objects."""
    block = 10_000
    with path.open("w") as f:
        for start in range(0, records, block):
            n = min(block, records - start)
            f.write(
                "".join(
                    f'{{"ts":{1_700_000_000_000 + i},"meter":{i % 50},"channel":{i % 8},'
                    f'"count":{i},"temp":{20 + i % 100 / 10}}}\n'
                    for i in range(start, start + n)
                )
            )


class CountingContext(SourceContext):
    """Maps through the compiled mapping, counts records, acknowledges at once."""

    def __init__(
        self, state_dir: Path, config: FilesConfig, expected: int, *, mapping: bool = True
    ) -> None:
        self.name = "bench"
        self.log = structlog.get_logger().bind(source="bench")
        self.state_dir = state_dir
        if mapping:
            codecs = PluginManager.from_entry_points().codecs
            self.map_one = compile_mapping(config, codecs).map_one
        else:  # the source's own cost: every row becomes the same prebuilt record
            record = Record._make((Key._make((7, 1, 1, 1, -1)), b"\0" * 8))
            self.map_one = lambda fields, received_ns: record
        self.expected = expected
        self.count = 0
        self.rejected = 0
        self.done = asyncio.Event()

    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        try:
            return self.map_one(fields, received_ns)
        except ValueError:
            self.rejected += 1
            return None

    def reject(self, raw: object, reason: str, *, origin: str) -> None:
        self.rejected += 1

    async def emit(
        self,
        records: Sequence[Record[bytes]],
        ack: Ack | None = None,
        *,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> None:
        self.count += len(records)
        if ack is not None:
            ack()
        if self.count + self.rejected >= self.expected:
            self.done.set()
        await asyncio.sleep(0)


async def source_only(fmt: str, path: Path, records: int, work: Path) -> dict[str, float]:
    """Time the source alone (reading, splitting, parsing; a trivial mapping)."""
    return await source_and_mapping(fmt, path, records, work, mapping=False)


async def source_and_mapping(
    fmt: str, path: Path, records: int, work: Path, *, mapping: bool = True
) -> dict[str, float]:
    """Time the source with the core's compiled mapping over one dropped file."""
    drop = path.parent
    config = FilesConfig.model_validate(
        {
            "type": "files",
            "name": "bench",
            "mode": "drop",
            "directory": str(drop),
            "settle_time": 0,
            "poll_interval": 0.01,
            "format": fmt,
            **MAPPING,
        }
    )
    state = work / f"state-{fmt}-{mapping}"
    state.mkdir(exist_ok=True)
    context = CountingContext(state, config, records, mapping=mapping)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    cpu_before = process.cpu_times()
    start = time.perf_counter()
    task = asyncio.create_task(FilesSource(config, context).run())
    await context.done.wait()
    elapsed = time.perf_counter() - start
    cpu = process.cpu_times()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert context.count == records, (context.count, context.rejected)
    return {
        "records": records,
        "seconds": elapsed,
        "rate": records / elapsed,
        "cpu": (cpu.user + cpu.system - cpu_before.user - cpu_before.system) / elapsed,
        "rss_mb": process.memory_info().rss / 2**20,
        "rss_growth_mb": (process.memory_info().rss - rss_before) / 2**20,
    }


async def end_to_end(fmt: str, path: Path, records: int, work: Path) -> dict[str, float]:
    """Time the daemon (files source, pipeline, writer) ingesting one dropped file into a
    ``tstorage-server --memory`` child process, until the file is acknowledged and moved."""
    from tstorage_server.testing import ServerProcess
    from tstoraged.config.loader import load_config
    from tstoraged.runtime.app import Daemon

    env = {"TSTORAGED_LOAD_PLUGINS": "codecs,files"}
    drop = path.parent
    config = work / f"e2e-{fmt}.toml"
    with ServerProcess() as server:
        mapping = "\n".join(
            f"{k} = {{ " + ", ".join(f"{kk} = {_toml(vv)}" for kk, vv in v.items()) + " }"
            for k, v in MAPPING.items()
        )
        config.write_text(
            f"""
[tstorage]
host = "{server.host}"
port = {server.port}
[batch]
flush_interval = "20ms"
[metrics]
enabled = false
[log]
level = "warning"
[daemon]
state_dir = "{work / f"e2e-state-{fmt}"}"
[[sources]]
type = "files"
name = "bench"
mode = "drop"
directory = "{drop}"
settle_time = 0
poll_interval = "10ms"
format = "{fmt}"
{mapping}
"""
        )
        plugins = PluginManager.from_entry_points(env)
        daemon = Daemon(load_config(config, env, plugins), plugins, env=env, configure_logs=False)
        process = psutil.Process()
        cpu_before = process.cpu_times()
        start = time.perf_counter()
        task = asyncio.create_task(daemon.run())
        done = drop / "done" / path.name
        while not done.exists():  # noqa: ASYNC110 - the daemon signals nothing else
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        cpu = process.cpu_times()
        rss = process.memory_info().rss
        daemon.request_stop()
        await task
    return {
        "records": records,
        "seconds": elapsed,
        "rate": records / elapsed,
        "cpu": (cpu.user + cpu.system - cpu_before.user - cpu_before.system) / elapsed,
        "rss_mb": rss / 2**20,
    }


def _toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return f'"{value}"' if isinstance(value, str) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,jsonl")
    parser.add_argument("--no-end-to-end", action="store_true", help="source+mapping only")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    print(f"nproc={os.cpu_count()}  records={args.records}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fmt in args.formats.split(","):
            drop = work / f"drop-{fmt}"
            drop.mkdir()
            path = drop / f"data.{fmt}.tmp"
            (write_csv if fmt == "csv" else write_jsonl)(path, args.records)
            size = path.stat().st_size
            os.rename(path, drop / f"data.{fmt}")
            for stage, bench in (
                ("source only", source_only),
                ("source+mapping", source_and_mapping),
                ("end-to-end", end_to_end),
            ):
                if stage == "end-to-end" and args.no_end_to_end:
                    continue
                path = drop / f"data.{fmt}"
                if not path.exists():  # moved to done/ by the previous stage
                    os.rename(drop / "done" / path.name, path)
                result = asyncio.run(bench(fmt, path, args.records, work))
                # Records per CPU-second of this process: what one core does, even when
                # other processes share the machine (wall-clock rates then vary a lot).
                per_cpu_second = result["rate"] / result["cpu"]
                print(
                    f"{fmt:6} {stage:15} {result['rate']:>10,.0f} records/s  "
                    f"{per_cpu_second:>10,.0f} records/cpu-s  "
                    f"{size / result['seconds'] / 2**20:6.1f} MiB/s  "
                    f"cpu {result['cpu']:.2f}  rss {result['rss_mb']:.0f} MB"
                )


if __name__ == "__main__":
    main()
