"""`tstoraged dead-letters show|replay` against a real dead-letter file and a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_server.testing import ServerProcess
from tstoraged.pipeline.deadletter import DeadLetterFile


def tstoraged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def setup(tmp_path: Path):
    with ServerProcess() as server:
        state = tmp_path / "state"
        dead = DeadLetterFile(state / "dead-letter.jsonl")
        put_records = [Record(Key(4, 1, 2, 1000 + i), bytes([i])) for i in range(5)]
        puta_records = [Record(Key(4, 9, 9, 50, 777 + i), b"\x01") for i in range(3)]
        dead.write_records([("line-3", r) for r in put_records], "TStorage answered ERROR")
        dead.write_records([("line-3", r) for r in puta_records], "gave up after 5 attempts")
        dead.write_raw("mqtt", "not,a,number", "field 'temp': 'abc' is not a number", origin="a:3")
        dead.close()
        cfg = tmp_path / "t.toml"
        cfg.write_text(f'[tstorage]\nport = {server.port}\n[daemon]\nstate_dir = "{state}"\n')
        yield cfg, server, put_records, puta_records


def test_show_lists_records_and_raw_inputs_with_reasons(setup) -> None:
    cfg, *_ = setup
    result = tstoraged("dead-letters", "show", "-c", str(cfg), "--json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(entries) == 9
    assert entries[0]["key"] == {"cid": 4, "mid": 1, "moid": 2, "cap": 1000, "acq": -1}
    assert entries[-1]["origin"] == "a:3"
    assert "not a number" in entries[-1]["reason"]
    table = tstoraged("dead-letters", "show", "-c", str(cfg), "--source", "mqtt")
    assert table.returncode == 0
    assert "not,a,number" in table.stdout


def test_replay_puts_records_once_and_keeps_puta_acq(setup) -> None:
    cfg, server, put_records, puta_records = setup
    first = tstoraged("dead-letters", "replay", "-c", str(cfg))
    assert first.returncode == 0, first.stderr
    assert "replayed 8 of 8 records" in first.stdout
    assert "1 raw inputs are not replayable" in first.stdout
    with Channel("127.0.0.1", server.port, BytesPayloadType()) as channel:
        stored = channel.get(Key.min(), Key.max()).data
    assert sorted((r.key.mid, r.key.cap, r.value) for r in stored) == sorted(
        (r.key.mid, r.key.cap, r.value) for r in put_records + puta_records
    )
    assert {r.key.acq for r in stored if r.key.mid == 9} == {777, 778, 779}
    second = tstoraged("dead-letters", "replay", "-c", str(cfg))
    assert "replayed 0 of 0 records" in second.stdout
    remaining = tstoraged("dead-letters", "show", "-c", str(cfg), "--json")
    assert len(remaining.stdout.splitlines()) == 1  # only the raw input is left to look at


def test_replay_fails_clearly_when_tstorage_is_down(setup) -> None:
    cfg, server, *_ = setup
    server.kill()
    result = tstoraged("dead-letters", "replay", "-c", str(cfg))
    assert result.returncode == 1
    assert "TStorage" in result.stderr
    assert "replayed 0 of 8 records" in result.stdout
