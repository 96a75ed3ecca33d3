"""Whole-daemon throughput: the generator source at full speed -> mapping -> intake -> batcher ->
writer -> AsyncChannel.put -> tstorage-server (in-memory mode, a separate process).

Measures sustained records/s (from the first to the last acknowledged write, so start-up is
excluded), the daemon's CPU seconds per million records, and its peak RSS.

    .venv/bin/python benchmarks/bench_daemon.py --records 2000000
    .venv/bin/python benchmarks/bench_daemon.py --records 2000000 --spool batch
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import tempfile
import time
from pathlib import Path

from tstorage_server.testing import ServerProcess
from tstoraged.config import load_config
from tstoraged.plugins import PluginManager
from tstoraged.runtime.app import Daemon


def config(port: int, state: Path, records: int, spool: str | None, payload: str) -> str:
    spool_section = (
        f'[spool]\nenabled = true\nfsync = "{spool}"\nfsync_interval = "1s"\n' if spool else ""
    )
    return f"""
[tstorage]
port = {port}
[metrics]
enabled = false
[log]
level = "warning"
[daemon]
state_dir = "{state}"
{spool_section}
[[sources]]
type = "generator"
name = "load"
rate = 0
count = {records}
chunk = 5000
payload = {payload}
"""


async def measure(cfg: Path, records: int) -> dict[str, float]:
    plugins = PluginManager.from_entry_points(os.environ)
    settings = load_config(cfg, plugins=plugins)
    daemon = Daemon(settings, plugins, config_path=cfg, once=True, configure_logs=False)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    task = asyncio.create_task(daemon.run())
    first_write = last_write = None
    written = 0
    while not task.done():
        written = daemon.metrics.snapshot()["sources"].get("load", {}).get("written", 0)
        now = time.perf_counter()
        if written and first_write is None:
            first_write = (now, written)
        if written >= records:
            last_write = now
            break
        await asyncio.sleep(0.01)
    result = await task
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    assert result.exit_code == 0, result
    if last_write is None:  # the daemon finished between two polls
        last_write = time.perf_counter()
    assert first_write is not None, "nothing was written"
    sustained = (records - first_write[1]) / (last_write - first_write[0])
    return {
        "records": records,
        "sustained_rec_s": sustained,
        "overall_rec_s": records / wall,
        "cpu_s_per_million": cpu / records * 1e6,
        "cpu_utilisation": cpu / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--spool", choices=("batch", "interval"), default=None)
    parser.add_argument(
        "--payload",
        default='{ format = "<d", fields = ["value"] }',
        help="payload mapping of the generator (TOML inline table)",
    )
    args = parser.parse_args()
    with ServerProcess() as server, tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        cfg.write_text(
            config(server.port, Path(tmp) / "state", args.records, args.spool, args.payload)
        )
        out = asyncio.run(measure(cfg, args.records))
    print(f"cores: {os.cpu_count()}  spool: {args.spool or 'off'}  payload: {args.payload}")
    for name, value in out.items():
        print(f"  {name:>20}: {value:,.1f}")


if __name__ == "__main__":
    main()
