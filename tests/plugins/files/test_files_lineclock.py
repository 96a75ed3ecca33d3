"""acq numbered by line (issue 10 item 2): a line read again gets the same acq and stamp."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from files_harness import (
    CSV_HEADER,
    HarnessContext,
    RunningSource,
    csv_lines,
    files_config,
    new_process,
)
from tstoraged_files.lineclock import MAX_LAG_NS, LineClock

from tstorage_client.record import Key, Record


def test_line_clock_numbers_lines_from_anchors() -> None:
    clock = LineClock([[1, 1000], [50, 9000]])
    assert clock.acq(1) == 1000
    assert clock.acq(49) == 1048
    assert clock.acq(50) == 9000
    assert clock.offset_for(2, 40) == 999
    assert clock.offset_for(40, 60) is None  # two anchors: numbered line by line
    # A new anchor never numbers a line below the line before it.
    assert clock.add(60, now_acq=5) == clock.acq(59) + 1
    clock.prune(acked_line=55)
    assert clock.to_json() == [[50, 9000], [60, 9010]]
    with pytest.raises(ValueError, match="before the first anchor"):
        LineClock([[10, 0]]).acq(9)


async def test_unacknowledged_lines_read_again_get_the_same_acq_and_stamp(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text(CSV_HEADER + csv_lines(0, 3000))
    config = files_config(mode="tail", paths=[str(data)], read_chunk_bytes=4096)
    first = HarnessContext(tmp_path / "state", auto_ack=False)
    async with RunningSource(config, first):
        await first.wait_records(3000)
    first.ack_through(3)  # the rest is "lost in a crash" and read again
    acked = sum(len(e.records) for e in first.emits[:3])
    new_process()
    second = HarnessContext(tmp_path / "state")
    async with RunningSource(config, second):
        await second.wait_records(3000 - acked)
    again = {r.key.cap: r.key.acq for r in second.records}
    before = {r.key.cap: r.key.acq for r in first.records[acked:]}
    assert again == before
    acqs = [r.key.acq for r in first.records]
    assert acqs == sorted(set(acqs)), "acq increases line by line"


def stamped_mapper(fields: Mapping[str, Any], received_ns: int | None = None) -> Record[bytes]:
    """The meter mapping with the receive time as capture time (no time field)."""
    assert received_ns is not None
    return Record(Key(1, int(fields["meter"]), int(fields["channel"]), received_ns, -1), b"")


async def test_lines_without_a_time_field_keep_their_stamp_when_read_again(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text(CSV_HEADER + csv_lines(0, 500))
    config = files_config(mode="tail", paths=[str(data)], read_chunk_bytes=1024, cap={})
    assert config.cap.field is None
    first = HarnessContext(tmp_path / "state", auto_ack=False, mapper=stamped_mapper)
    async with RunningSource(config, first):
        await first.wait_records(500)
    new_process()
    second = HarnessContext(tmp_path / "state", mapper=stamped_mapper)
    async with RunningSource(config, second):
        await second.wait_records(500)
    assert [r.key for r in second.records] == [r.key for r in first.records]
    caps = [r.key.cap for r in first.records]
    assert caps == sorted(set(caps)), "distinct stamps, one ns apart"


async def test_anchor_is_on_disk_before_its_lines_leave_and_a_lagging_clock_moves_on(
    tmp_path: Path,
) -> None:
    data = tmp_path / "a.csv"
    data.write_text(CSV_HEADER + csv_lines(0, 100))
    config = files_config(mode="tail", paths=[str(data)])
    context = HarnessContext(tmp_path / "state")
    state = tmp_path / "state" / "checkpoints.json"
    async with RunningSource(config, context):
        await context.wait_records(100)
        during = json.loads(state.read_text())["files"][0]
    assert during["reserved_line"] >= 101  # header + 100 lines, numbered before emitted
    saved = json.loads(state.read_text())
    entry = saved["files"][0]
    assert entry["line"] == 101
    first_acq = context.records[0].key.acq
    assert entry["anchors"][0] == [1, first_acq - 1]  # line 1 is the header
    # As if the reservation ended here and the anchor were ten seconds old: the next lines
    # get a fresh anchor instead of an acq that lags the clock.
    new_process()
    entry["anchors"] = [[1, first_acq - 1 - 10 * MAX_LAG_NS]]
    entry["reserved_line"] = 101
    state.write_text(json.dumps(saved))
    with data.open("a") as file:
        file.write(csv_lines(100, 110))
    later = HarnessContext(tmp_path / "state")
    async with RunningSource(config, later):
        await later.wait_records(10)
    assert later.records[0].key.acq > first_acq + 100
