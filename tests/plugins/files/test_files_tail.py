"""Tail mode: following, rotation, truncation, deletion, and exact resume after a restart."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from files_harness import (
    CSV_HEADER,
    HarnessContext,
    RunningSource,
    compiled_mapper,
    csv_lines,
    files_config,
    new_process,
)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def test_follows_a_growing_file_and_waits_for_the_newline_of_a_partial_line(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 10) + "10,1,0,")
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(tmp_path / "*.csv")])
    async with RunningSource(config, context):
        await context.wait_records(10)
        append(log, "5.0\n" + csv_lines(11, 20))
        await context.wait_records(20)
    assert context.caps() == list(range(20))
    assert context.records[10].value == b"5.0"
    assert context.rejects == []


async def test_new_files_matching_the_glob_are_picked_up(tmp_path: Path) -> None:
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(tmp_path / "*.csv")])
    async with RunningSource(config, context):
        (tmp_path / "a.csv").write_text(CSV_HEADER + csv_lines(0, 5))
        await context.wait_records(5)
        (tmp_path / "b.csv").write_text(CSV_HEADER + csv_lines(5, 10))
        (tmp_path / "ignored.txt").write_text(CSV_HEADER + csv_lines(10, 20))
        await context.wait_records(10)
    assert sorted(context.caps()) == list(range(10))


async def seen_by(running: RunningSource, path: Path) -> None:
    """Wait until the source follows the file now at ``path`` and has read into it.

    A rotation schedule is far slower than the poll interval; this makes the test's rotations
    respect that without relying on timing. Writing goes on meanwhile in the tests.
    """
    inode = os.stat(path).st_ino

    def read_into() -> bool:
        return any(r.entry.ino == inode and r.read_offset > 0 for r in running.source_followed())

    await running.context.wait_until(read_into, f"{path} followed")


async def test_rename_and_create_rotation_under_continuous_writing_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(log)], format="jsonl", read_chunk_bytes=512)
    total = 0
    async with RunningSource(config, context) as running:
        writer = log.open("a")
        for rotation in range(5):
            for step in range(40):
                for _ in range(5):
                    writer.write(f'{{"ts": {total}, "meter": 1, "value": {total}}}\n')
                    total += 1
                writer.flush()
                await asyncio.sleep(0)
                if step == 20:
                    await seen_by(running, log)
            os.rename(log, tmp_path / f"app.log.{rotation}")
            # The writer appends to the renamed file until it reopens, as real loggers do.
            writer.write(f'{{"ts": {total}, "meter": 1, "value": {total}}}\n')
            total += 1
            writer.close()
            writer = log.open("a")
        writer.close()
        await context.wait_records(total)
    assert sorted(context.caps()) == list(range(total))
    assert context.rejects == []


async def test_copytruncate_under_continuous_writing_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.csv"
    context = HarnessContext(tmp_path / "state")
    # The glob matches the copies too: their content is recognised by fingerprint and only
    # what had not been read from the original before it was truncated is read from them.
    config = files_config(paths=[str(tmp_path / "app.csv*")], read_chunk_bytes=256)
    total = 0
    async with RunningSource(config, context) as running:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, CSV_HEADER.encode())
        for rotation in range(5):
            for step in range(40):
                os.write(fd, csv_lines(total, total + 5).encode())
                total += 5
                await asyncio.sleep(0)
                if step == 20:
                    await seen_by(running, log)
            shutil.copyfile(log, tmp_path / f"app.csv.{rotation}")
            os.truncate(log, 0)
            os.write(fd, CSV_HEADER.encode())  # the writer starts the file over with its header
        os.write(fd, csv_lines(total, total + 5).encode())
        total += 5
        os.close(fd)
        await context.wait_records(total)
        await context.wait_until(lambda: len(running.source_followed()) >= 6, "copies followed")
    assert sorted(context.caps()) == list(range(total))
    assert context.rejects == []


async def test_a_header_that_reappears_after_truncation_is_a_header_not_data(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 10))
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(log)])
    async with RunningSource(config, context):
        await context.wait_records(10)
        # Truncated and rewritten with more bytes than were read before, between two polls:
        # only the changed first bytes (fingerprint) show that the file started over.
        log.write_text(CSV_HEADER + csv_lines(10, 40))
        await context.wait_records(40)
        os.truncate(log, 0)
        await asyncio.sleep(0.05)
        append(log, CSV_HEADER + csv_lines(40, 45))
        await context.wait_records(45)
    assert context.caps() == list(range(45))
    assert context.rejects == []


async def test_deleted_files_are_forgotten_and_a_new_file_of_that_name_is_read(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 5))
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(log)])
    async with RunningSource(config, context) as running:
        await context.wait_records(5)
        log.unlink()
        await context.wait_until(lambda: not running.source_followed(), "file closed")
        log.write_text(CSV_HEADER + csv_lines(5, 8))
        await context.wait_records(8)
    assert context.caps() == list(range(8))


async def test_start_at_end_skips_existing_lines_of_files_present_at_startup(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 50))
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(tmp_path / "*.csv")], start_at="end")
    async with RunningSource(config, context) as running:
        await context.wait_until(lambda: bool(running.source_followed()), "file followed")
        append(log, csv_lines(50, 52) + "bad line\n")
        (tmp_path / "b.csv").write_text(CSV_HEADER + csv_lines(52, 53))
        await context.wait_records(3)
        await context.wait_until(lambda: bool(context.rejects), "reject")
    assert sorted(context.caps()) == [50, 51, 52]
    assert context.rejects[0].origin == f"{log}:54"  # header + 50 + 2 lines before it


async def test_restart_resumes_exactly_after_the_last_acknowledged_chunk(tmp_path: Path) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 1000))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)], read_chunk_bytes=1000)
    first = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(1000)
        first.ack_through(7)
    durable = [r for e in first.emits[:7] for r in e.records]
    assert 0 < len(durable) < 1000

    new_process()  # a daemon restart: positions come from disk
    second = HarnessContext(state)
    async with RunningSource(config, second):
        await second.wait_records(1000 - len(durable))
    assert durable + second.records == first.records
    assert second.caps()[0] == durable[-1].key.cap + 1


async def test_acks_arriving_after_the_source_stopped_still_move_the_checkpoint(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 300))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)], read_chunk_bytes=1000)
    first = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(300)
    first.ack_through(len(first.emits))  # the pipeline delivers what was in flight

    new_process()  # a daemon restart: positions come from disk
    second = HarnessContext(state)
    async with RunningSource(config, second):
        append(log, csv_lines(300, 301))
        await second.wait_records(1)
    assert second.caps() == [300]


async def test_unacknowledged_partial_progress_is_read_again_after_restart(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 100))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)])
    first = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(100)
    new_process()  # a daemon restart: positions come from disk
    second = HarnessContext(state)
    async with RunningSource(config, second):
        await second.wait_records(100)
    assert second.caps() == list(range(100))


async def test_bad_lines_are_rejected_with_file_and_line_number_and_the_file_goes_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_bytes(
        CSV_HEADER.encode()
        + b"0,1,0,1.0\n"
        + b"1,1,0\n"  # too few fields
        + b"two,1,0,1.0\n"  # the mapping refuses it
        + b"\xff\xfe\x00garbage\n"  # not UTF-8
        + b"4,"
        + b"9" * 200
        + b",0,1.0\n"  # over max_line_bytes
        + b"5,1,0,1.0\n"
    )
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(log)], max_line_bytes=64)
    async with RunningSource(config, context):
        await context.wait_records(2)
        await context.wait_until(lambda: len(context.rejects) >= 4, "4 rejects")
    assert context.caps() == [0, 5]
    origins = {r.origin: r.reason for r in context.rejects}
    assert sorted(origins) == [f"{log}:{n}" for n in (3, 4, 5, 6)]
    assert "expected 4 fields, got 3" in origins[f"{log}:3"]
    assert "undecodable" in origins[f"{log}:5"]
    assert "max_line_bytes" in origins[f"{log}:6"]


async def test_a_huge_line_is_skipped_without_buffering_it(tmp_path: Path) -> None:
    log = tmp_path / "a.csv"
    with log.open("wb") as f:
        f.write(CSV_HEADER.encode() + b"0,1,0,1\n")
        f.write(b"X" * (8 << 20))  # an 8 MiB line, read in 64 KiB chunks, bound 1 KiB
        f.write(b"\n1,1,0,1\n")
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(log)], max_line_bytes=1024, read_chunk_bytes=65536)
    async with RunningSource(config, context) as running:
        await context.wait_records(2)
        readers = running.source_followed()
        assert readers[0].splitter.pending_bytes == 0
    assert context.caps() == [0, 1]
    assert [r.origin for r in context.rejects] == [f"{log}:3"]


async def test_json_lines_are_mapped_and_bad_ones_rejected(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_text(
        '{"ts": 1, "meter": 2, "channel": 3, "value": 4.5}\n'
        "\n"
        "[1, 2]\n"
        "{broken\n"
        '{"ts": 2, "meter": 2, "channel": 3, "value": "x"}\n'
    )
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(log)], format="jsonl")
    async with RunningSource(config, context):
        await context.wait_records(2)
        await context.wait_until(lambda: len(context.rejects) >= 2, "2 rejects")
    assert [(r.key.mid, r.key.moid, r.key.cap, r.value) for r in context.records] == [
        (2, 3, 1, b"4.5"),
        (2, 3, 2, b"x"),
    ]
    assert [r.origin for r in context.rejects] == [f"{log}:3", f"{log}:4"]


async def test_a_file_truncated_while_stopped_is_read_from_its_start_after_restart(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 100))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)])
    first = HarnessContext(state)
    async with RunningSource(config, first):
        await first.wait_records(100)
    inode = log.stat().st_ino
    log.write_text(CSV_HEADER + csv_lines(100, 103))  # same inode, same header, shorter
    assert log.stat().st_ino == inode
    new_process()  # a daemon restart: positions come from disk
    second = HarnessContext(state)
    async with RunningSource(config, second):
        await second.wait_records(3)
    assert second.caps() == [100, 101, 102]
    assert second.rejects == []


async def test_crlf_line_endings_work_in_every_format(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"ts,meter,channel,value\r\n1,2,3,x\r\n")
    (tmp_path / "b.jsonl").write_bytes(b'{"ts": 2, "meter": 2, "channel": 3, "value": "y"}\r\n')
    (tmp_path / "c.rec").write_bytes(b"cid,mid,moid,cap,hexpayload\r\n1,2,3,3,7a\r\n")
    results = []
    for name, fmt in (("a.csv", "csv"), ("b.jsonl", "jsonl"), ("c.rec", "records")):
        context = HarnessContext(tmp_path / f"state-{fmt}")
        config = files_config(paths=[str(tmp_path / name)], format=fmt)
        async with RunningSource(config, context):
            await context.wait_records(1)
        assert context.rejects == []
        results += [(r.key.mid, r.key.moid, r.key.cap, r.value) for r in context.records]
    assert results == [(2, 3, 1, b"x"), (2, 3, 2, b"y"), (2, 3, 3, b"z")]


async def test_acks_of_a_stopped_instance_still_count_after_a_new_one_started(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 300))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)], read_chunk_bytes=1000)
    old = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, old):
        await old.wait_records(300)
    new = HarnessContext(state, auto_ack=False)  # a reload: started before the old acks came
    async with RunningSource(config, new):
        await new.wait_records(300)  # it re-reads what was not yet acknowledged
        old.ack_through(len(old.emits))
    third = HarnessContext(state)
    async with RunningSource(config, third):
        append(log, csv_lines(300, 301))
        await third.wait_records(1)
    assert third.caps() == [300]


async def test_a_copy_seen_before_its_original_is_truncated_is_not_read_twice(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 20))
    context = HarnessContext(tmp_path / "state")
    config = files_config(paths=[str(tmp_path / "app.csv*")], fingerprint_bytes=64, rotate_wait=30)
    async with RunningSource(config, context):
        await context.wait_records(20)
        # logrotate's copytruncate, with a poll between the copy and the truncation.
        append(log, csv_lines(20, 30))
        shutil.copyfile(log, tmp_path / "app.csv.1")
        await context.wait_records(30)  # that poll read 20..29 and saw the copy
        with log.open("w") as f:
            f.write(CSV_HEADER + csv_lines(30, 35))
        await context.wait_records(35)
        append(log, csv_lines(35, 36))  # one more poll after the copy was matched
        await context.wait_records(36)
    assert context.caps() == list(range(36))


async def test_without_a_capture_time_field_each_line_gets_its_own_receive_time(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text("meter,value\n" + "".join(f"1,{i}\n" for i in range(100)))
    config = files_config(
        paths=[str(log)],
        key={"cid": 1, "mid": "{meter}", "moid": 0},
        cap={},  # the receive time
        payload={"codec": "raw", "field": "value"},
    )
    context = HarnessContext(tmp_path / "state", mapper=compiled_mapper(config))
    async with RunningSource(config, context):
        await context.wait_records(100)
    caps = context.caps()
    assert caps == sorted(set(caps))  # one meter, one chunk: still 100 distinct keys
    assert [r.value for r in context.records] == [str(i).encode() for i in range(100)]


async def test_a_rotation_while_stopped_continues_in_the_rotated_file_when_the_glob_matches_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_text(CSV_HEADER + csv_lines(0, 100))
    state = tmp_path / "state"
    config = files_config(paths=[str(tmp_path / "app.log*")], exclude=["*.gz"])
    first = HarnessContext(state)
    async with RunningSource(config, first):
        await first.wait_records(100)
    append(log, csv_lines(100, 110))  # written before the rotation, never seen by the source
    os.rename(log, tmp_path / "app.log.1")
    log.write_text(CSV_HEADER + csv_lines(110, 115))
    (tmp_path / "app.log.2.gz").write_bytes(b"\x1f\x8b compressed")
    new_process()
    second = HarnessContext(state)
    async with RunningSource(config, second):
        await second.wait_records(15)
    assert sorted(second.caps()) == list(range(100, 115))
    assert second.rejects == []


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 8])
async def test_cancelled_at_any_emit_a_restart_repeats_and_loses_nothing(
    tmp_path: Path, cut: int
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 500) + "500,1,0,")  # ends in a partial line
    state = tmp_path / "state"
    config = files_config(paths=[str(log)], read_chunk_bytes=700)
    first = HarnessContext(state, cancel_at_emit=cut)
    running = RunningSource(config, first)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running.task, 20)
    assert len(first.emits) == cut - 1
    assert 500 - len(first.records) > 0  # stopped in the middle of the file
    new_process()
    second = HarnessContext(state)
    async with RunningSource(config, second):
        await second.wait_records(500 - len(first.records))
    assert first.caps() + second.caps() == list(range(500))


async def test_a_byte_order_mark_before_the_header_is_ignored_also_when_resuming(
    tmp_path: Path,
) -> None:
    log = tmp_path / "export.csv"
    log.write_bytes(b"\xef\xbb\xbf" + CSV_HEADER.encode() + csv_lines(0, 3).encode())
    state = tmp_path / "state"
    config = files_config(paths=[str(log)])
    first = HarnessContext(state)
    async with RunningSource(config, first):
        await first.wait_records(3)
    append(log, csv_lines(3, 5))
    new_process()
    second = HarnessContext(state)  # resumes mid-file: the header is read from line 1 again
    async with RunningSource(config, second):
        await second.wait_records(2)
    assert first.caps() + second.caps() == list(range(5))
    assert first.rejects == second.rejects == []


async def test_a_restart_resumes_from_positions_the_spool_kept_when_acks_never_landed(
    tmp_path: Path,
) -> None:
    # A crash right after the spool made records durable, before their acks reached the
    # checkpoint file: the positions stored with the records are the ones to resume from.
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 1000))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)], read_chunk_bytes=1000)
    first = HarnessContext(state, auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(1000)
    positions = dict(first.checkpoints)  # as the spool holds them with the last batch
    assert len(positions) == 1

    new_process()  # a daemon restart: no ack ever moved the checkpoint file
    second = HarnessContext(state, durable=positions)
    async with RunningSource(config, second):
        append(log, csv_lines(1000, 1010))
        await second.wait_records(10)
    assert second.caps() == list(range(1000, 1010))


async def test_spool_positions_of_another_content_on_a_reused_inode_are_ignored(
    tmp_path: Path,
) -> None:
    log = tmp_path / "a.csv"
    log.write_text(CSV_HEADER + csv_lines(0, 50))
    state = tmp_path / "state"
    config = files_config(paths=[str(log)])
    first = HarnessContext(state)
    async with RunningSource(config, first):
        await first.wait_records(50)
    ((name, position),) = first.checkpoints.items()
    stale = {name: {**position, "fingerprint": {"length": 10**6, "digest": "0" * 32}}}
    new_process()
    second = HarnessContext(state, durable=stale)
    async with RunningSource(config, second):
        append(log, csv_lines(50, 52))
        await second.wait_records(2)
    assert second.caps() == [50, 51]
