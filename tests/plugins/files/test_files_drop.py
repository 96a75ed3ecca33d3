"""Drop-directory mode: only complete files, moved or deleted once acknowledged, failures kept."""

from __future__ import annotations

import os
from pathlib import Path

from files_harness import (
    CSV_HEADER,
    HarnessContext,
    RunningSource,
    csv_lines,
    files_config,
    new_process,
)
from tstoraged_files import FilesConfig


def drop_config(directory: Path, **settings: object) -> FilesConfig:
    return files_config(mode="drop", directory=str(directory), pattern="*.csv", **settings)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


async def test_a_file_renamed_into_place_is_ingested_and_moved_to_done_after_its_ack(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    context = HarnessContext(tmp_path / "state", auto_ack=False)
    # A long settle time: only the rename into place can make the file count as complete.
    async with RunningSource(drop_config(drop, settle_time=3600), context):
        partial = drop / ".export.csv"  # a temp name matching the ignore patterns
        partial.write_text(CSV_HEADER + csv_lines(0, 10))
        tmp = drop / "export.csv.tmp"
        tmp.write_text(CSV_HEADER + csv_lines(10, 20) + "20,1,0,9")  # no final newline
        os.utime(tmp, ns=(0, 0))  # the writer finished long ago
        os.rename(tmp, drop / "export.csv")
        await context.wait_records(11)
        await context.wait_until(lambda: context.emits[-1].records == [], "end-of-file emit")
        assert names(drop) == [".export.csv", "export.csv"]  # not acknowledged yet
        context.ack_through(len(context.emits))
        assert names(drop) == [".export.csv"]
        assert names(drop / "done") == ["export.csv"]
    assert context.caps() == list(range(10, 21))


async def test_a_file_written_in_place_is_ingested_once_unchanged_for_the_settle_time(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    context = HarnessContext(tmp_path / "state")
    async with RunningSource(drop_config(drop, settle_time=0.2, on_done="delete"), context):
        target = drop / "a.csv"
        with target.open("w") as f:
            f.write(CSV_HEADER + csv_lines(0, 5))
            f.flush()
            # Still being written: not read before it settles, so no record may arrive now.
            f.write(csv_lines(5, 10))
        await context.wait_records(10)
        await context.wait_until(lambda: not target.exists(), "file deleted")
    assert context.caps() == list(range(10))
    assert not (drop / "done").exists()


async def test_a_file_with_too_many_bad_lines_goes_to_failed_with_a_reason(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    context = HarnessContext(tmp_path / "state")
    async with RunningSource(drop_config(drop, settle_time=0, max_bad_lines=1), context):
        (drop / "bad.csv").write_text(CSV_HEADER + "x\ny\nz\n" + csv_lines(0, 3))
        (drop / "good.csv").write_text(CSV_HEADER + csv_lines(3, 6))
        await context.wait_until(lambda: (drop / "done" / "good.csv").exists(), "good done")
        await context.wait_until(lambda: (drop / "failed" / "bad.csv").exists(), "bad failed")
    reason = (drop / "failed" / "bad.csv.reason").read_text()
    assert "max_bad_lines=1" in reason
    # The limit is checked per chunk, before the chunk is emitted: none of bad.csv arrives.
    assert [r.origin for r in context.rejects] == [f"{drop}/bad.csv:{n}" for n in (2, 3, 4)]
    assert context.caps() == [3, 4, 5]


async def test_a_partly_ingested_dropped_file_resumes_after_restart_and_then_moves(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "big.csv").write_text(CSV_HEADER + csv_lines(0, 500))
    state = tmp_path / "state"
    config = drop_config(drop, settle_time=0, read_chunk_bytes=1000)
    first = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(500)
        first.ack_through(3)
    durable = [r for e in first.emits[:3] for r in e.records]
    assert names(drop) == ["big.csv"]

    new_process()  # a daemon restart: positions come from disk
    second = HarnessContext(state)
    async with RunningSource(config, second):
        await second.wait_until(lambda: (drop / "done" / "big.csv").exists(), "moved")
    assert durable + second.records == first.records


async def test_same_name_dropped_again_is_ingested_again_and_kept_apart_in_done(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    context = HarnessContext(tmp_path / "state")
    async with RunningSource(drop_config(drop, settle_time=0), context):
        (drop / "a.csv").write_text(CSV_HEADER + csv_lines(0, 2))
        await context.wait_until(lambda: (drop / "done" / "a.csv").exists(), "first done")
        (drop / "a.csv").write_text(CSV_HEADER + csv_lines(2, 4))
        await context.wait_until(lambda: (drop / "done" / "a.csv.1").exists(), "second done")
    assert context.caps() == [0, 1, 2, 3]


async def test_record_csv_files_carry_key_cap_and_payload_in_each_row(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "r.csv").write_text(
        "cid,mid,moid,cap,hexpayload\n"
        "1,2,3,4,0a000000\n"
        "# a comment\n"
        "-5,2,3,4,00\n"  # cid out of range
        "1,2,3,zz,00\n"
        "7,-8,9,10,\n"
    )
    context = HarnessContext(tmp_path / "state")
    async with RunningSource(drop_config(drop, settle_time=0, format="records"), context):
        await context.wait_until(lambda: (drop / "done" / "r.csv").exists(), "done")
    # acq is numbered by the line (lineclock): lines 2 and 6, one anchor, 4 ns apart.
    assert [(tuple(r.key)[:4], r.value) for r in context.records] == [
        ((1, 2, 3, 4), b"\n\0\0\0"),
        ((7, -8, 9, 10), b""),
    ]
    acqs = [r.key.acq for r in context.records]
    assert acqs[1] - acqs[0] == 4
    assert [r.origin for r in context.rejects] == [f"{drop}/r.csv:{n}" for n in (4, 5)]
