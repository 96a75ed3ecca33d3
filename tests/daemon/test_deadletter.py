"""The dead-letter file: what is written, how it is read back, rotation, torn tails."""

from __future__ import annotations

import datetime as dt
import json

from tstorage_client.record import Key, Record
from tstoraged.pipeline.deadletter import DEAD_LETTER_FILE, DeadLetterFile, iter_dead_letters

FIXED_TIME = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def test_records_are_written_as_json_lines_and_read_back_for_replay(tmp_path):
    dead = DeadLetterFile(tmp_path / DEAD_LETTER_FILE, now=lambda: FIXED_TIME)
    records = [Record(Key(1, 2, 3, 4, -1), b"\x0a\x00"), Record(Key(-5, 2**63 - 1, 0, 0), b"")]
    assert dead.write_records([("line-3", r) for r in records], "bad key", origin="batch 7") == 2
    dead.close()

    lines = (tmp_path / DEAD_LETTER_FILE).read_text().splitlines()
    assert json.loads(lines[0]) == {
        "time": "2026-01-02T03:04:05.678901Z",
        "source": "line-3",
        "origin": "batch 7",
        "reason": "bad key",
        "key": {"cid": 1, "mid": 2, "moid": 3, "cap": 4, "acq": -1},
        "payload_hex": "0a00",
    }
    entries = list(iter_dead_letters(tmp_path / DEAD_LETTER_FILE))
    assert [entry.record() for entry in entries] == records
    assert {entry.reason for entry in entries} == {"bad key"}


def test_raw_inputs_keep_text_as_text_and_bytes_as_base64(tmp_path):
    dead = DeadLetterFile(tmp_path / "dl.jsonl")
    dead.write_raw("csv", "a,b,,c", "missing field 'ts'", origin="/data/a.csv:17")
    dead.write_raw("mqtt", b"\x00\xff", "not JSON", origin="plant/7/temp")
    entries = list(iter_dead_letters(tmp_path / "dl.jsonl"))
    assert [(e.source, e.origin, e.raw, e.record()) for e in entries] == [
        ("csv", "/data/a.csv:17", "a,b,,c", None),
        ("mqtt", "plant/7/temp", b"\x00\xff", None),
    ]
    assert '"raw_base64": "AP8="' in (tmp_path / "dl.jsonl").read_text()


def test_file_rotates_at_its_bound_and_the_reader_returns_oldest_first(tmp_path):
    path = tmp_path / DEAD_LETTER_FILE
    dead = DeadLetterFile(path, max_bytes=1000)
    for i in range(30):
        dead.write_raw("s", f"input {i}", "unparseable", origin=f"f:{i}")
    assert path.stat().st_size <= 1000
    assert path.with_name(DEAD_LETTER_FILE + ".1").stat().st_size <= 1000
    origins = [entry.origin for entry in iter_dead_letters(path)]
    numbers = [int(origin.split(":")[1]) for origin in origins]
    assert numbers == sorted(numbers)
    assert numbers[-1] == 29
    # Only the newest two files are kept: the bound holds.
    assert len(numbers) < 30


def test_a_torn_last_line_is_skipped_by_the_reader(tmp_path):
    path = tmp_path / DEAD_LETTER_FILE
    dead = DeadLetterFile(path)
    dead.write_raw("s", "complete", "r", origin=None)
    dead.close()
    with open(path, "ab") as file:
        file.write(b'{"time": "2026-01-0')  # power was cut mid-write
    assert [entry.raw for entry in iter_dead_letters(path)] == ["complete"]


def test_reading_a_missing_file_yields_nothing(tmp_path):
    assert list(iter_dead_letters(tmp_path / "absent.jsonl")) == []


def test_sync_makes_entries_durable_and_is_idempotent(tmp_path):
    path = tmp_path / DEAD_LETTER_FILE
    dead = DeadLetterFile(path)
    dead.sync()  # nothing written yet: nothing to do
    dead.write_raw("s", "x", "r", origin=None)
    dead.sync()
    dead.sync()
    # Flushed at write time: a reader sees the entry while the file is still open.
    assert [entry.raw for entry in iter_dead_letters(path)] == ["x"]
