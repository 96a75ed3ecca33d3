"""A large file streams through the source with bounded memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from files_harness import CSV_HEADER, HarnessContext, RunningSource, files_config

FILE_BYTES = 2**30  # the 1 GB: memory must not depend on the size of the file
MAX_RSS_GROWTH_MB = 64


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_1_gb_file_streams_with_bounded_memory(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    block = "".join(f"{i},{i % 7},{i % 3},{'v' * 80}{i}\n" for i in range(10_000)).encode()
    copies = FILE_BYTES // len(block)
    tmp = drop / "big.csv.tmp"
    with tmp.open("wb") as f:
        f.write(CSV_HEADER.encode())
        for _ in range(copies):
            f.write(block)
    os.rename(tmp, drop / "big.csv")
    expected = copies * 10_000

    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak = rss_before
    context = HarnessContext(tmp_path / "state", keep_records=False)

    def done_and_sample() -> bool:
        nonlocal peak
        peak = max(peak, process.memory_info().rss)
        return (drop / "done" / "big.csv").exists()

    config = files_config(mode="drop", directory=str(drop), settle_time=0)
    async with RunningSource(config, context):
        await context.wait_until(done_and_sample, "file ingested and moved", within_s=480)
    growth_mb = (peak - rss_before) / 2**20
    record_property("rss_growth_mb", round(growth_mb, 1))
    print(f"\n1 GB file: {expected} records, peak RSS growth {growth_mb:.1f} MB")
    assert context.emitted == expected
    assert context.rejects == []
    assert growth_mb < MAX_RSS_GROWTH_MB
