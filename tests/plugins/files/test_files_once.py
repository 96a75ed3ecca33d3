"""Once mode (backfill imports): every matching file read to its end, then the source returns."""

from __future__ import annotations

from pathlib import Path

from files_harness import (
    CSV_HEADER,
    HarnessContext,
    RunningSource,
    csv_lines,
    files_config,
    new_process,
)
from tstoraged_files.once import OnceImporter


async def test_imports_every_file_to_its_end_then_finishes_with_a_summary(tmp_path: Path) -> None:
    a = CSV_HEADER + csv_lines(0, 50)
    b = CSV_HEADER + csv_lines(50, 60) + "bad\n" + "60,1,0,7"  # no newline at the end
    (tmp_path / "a.csv").write_text(a)
    (tmp_path / "b.csv").write_text(b)
    context = HarnessContext(tmp_path / "state")
    running = RunningSource(files_config(mode="once", paths=[str(tmp_path / "*.csv")]), context)
    await running.task  # returns by itself
    assert context.caps() == list(range(61))
    assert isinstance(running.source.worker, OnceImporter)
    progress = running.source.worker.progress
    size = len(a) + len(b)
    assert (progress.files_done, progress.bytes_done, progress.bytes_total) == (2, size, size)
    assert (progress.records, progress.rejected, progress.failed) == (61, 1, [])


async def test_an_interrupted_import_resumes_and_completed_files_are_not_read_again(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.csv").write_text(CSV_HEADER + csv_lines(0, 400))
    state = tmp_path / "state"
    config = files_config(mode="once", paths=[str(tmp_path / "*.csv")], read_chunk_bytes=1000)
    first = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(400)
        first.ack_through(4)
    durable = [r for e in first.emits[:4] for r in e.records]

    new_process()  # a daemon restart: positions come from disk
    second = HarnessContext(state)
    await RunningSource(config, second).task
    assert durable + second.records == first.records

    new_process()  # a daemon restart: positions come from disk
    third = HarnessContext(state)
    await RunningSource(config, third).task
    assert third.records == []
