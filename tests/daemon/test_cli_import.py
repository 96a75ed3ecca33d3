"""`tstoraged import FILE...` against a real server: backfill with progress and a summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key
from tstorage_server.testing import ServerProcess


def tstoraged(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", *args], capture_output=True, text=True, timeout=120
    )


def stored(port: int) -> list:
    with Channel("127.0.0.1", port, BytesPayloadType()) as channel:
        items = list(channel.get_iter(Key.min(), Key.max()))
    assert items[-1].is_ok()  # get_iter ends with its final response
    return items[:-1]


@pytest.fixture
def server():
    with ServerProcess() as proc:
        yield proc


def config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        f"""
[tstorage]
port = {port}
[daemon]
state_dir = "{tmp_path / "state"}"
[batch]
flush_interval = "100ms"
[[sources]]
type = "files"
name = "exports"
mode = "drop"
directory = "{tmp_path / "drop"}"
format = "csv"
key = {{ cid = 3, mid = "{{meter}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["temp"] }}
"""
    )
    return cfg


def export(path: Path, first: int, count: int, bad: int | None = None) -> Path:
    rows = ["ts,meter,temp"]
    for i in range(first, first + count):
        rows.append(f"{1_700_000_000_000 + i},{i % 7},{'x' if i == bad else 20 + i / 100}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_imports_files_like_the_configured_source_and_summarises(server, tmp_path) -> None:
    cfg = config(tmp_path, server.port)
    a = export(tmp_path / "a.csv", 0, 3000)
    b = export(tmp_path / "b.csv", 3000, 2000)
    result = tstoraged("import", "-c", str(cfg), str(a), str(b))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported 2 file(s): 5000 records read, 5000 written" in result.stdout
    records = stored(server.port)
    assert len(records) == 5000
    assert {r.key.cid for r in records} == {3}


def test_running_an_import_again_does_not_import_twice(server, tmp_path) -> None:
    cfg = config(tmp_path, server.port)
    a = export(tmp_path / "a.csv", 0, 1000)
    assert tstoraged("import", "-c", str(cfg), str(a)).returncode == 0
    again = tstoraged("import", "-c", str(cfg), str(a))
    assert again.returncode == 0
    assert "0 records read" in again.stdout
    assert len(stored(server.port)) == 1000


def test_an_imported_file_is_skipped_with_the_reason_and_force_imports_it_again(
    server, tmp_path
) -> None:
    cfg = config(tmp_path, server.port)
    a = export(tmp_path / "a.csv", 0, 1000)
    assert tstoraged("import", "-c", str(cfg), str(a)).returncode == 0
    again = tstoraged("import", "-c", str(cfg), str(a))
    assert again.returncode == 0
    checkpoints = tmp_path / "state" / "sources" / "import-exports"
    assert (
        f"skipped {a}: already imported (1001 lines), as its checkpoint in {checkpoints} says; "
        "--force imports it again"
    ) in again.stdout
    forced = tstoraged("import", "-c", str(cfg), "--force", str(a))
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "1000 records read, 1000 written" in forced.stdout
    assert "skipped" not in forced.stdout
    assert len(stored(server.port)) == 2000  # put assigns a new acq: the rows are there twice


def test_a_grown_file_is_resumed_and_said_so(server, tmp_path) -> None:
    cfg = config(tmp_path, server.port)
    a = export(tmp_path / "a.csv", 0, 100)
    assert tstoraged("import", "-c", str(cfg), str(a)).returncode == 0
    with a.open("a") as grown:
        grown.write("".join(f"{1_700_000_001_000 + i},1,20.5\n" for i in range(50)))
    again = tstoraged("import", "-c", str(cfg), str(a))
    assert again.returncode == 0
    assert f"resumed {a} after line 101 (imported up to there before)" in again.stdout
    assert "50 records read, 50 written" in again.stdout


def test_rejected_lines_make_the_import_fail_and_are_dead_lettered(server, tmp_path) -> None:
    cfg = config(tmp_path, server.port)
    a = export(tmp_path / "a.csv", 0, 500, bad=17)
    result = tstoraged("import", "-c", str(cfg), str(a))
    assert result.returncode == 1
    assert "1 lines rejected" in result.stdout
    assert len(stored(server.port)) == 499
    dead = tstoraged("dead-letters", "show", "-c", str(cfg), "--json")
    assert f"{a}:19" in dead.stdout  # line 19: header + 18 rows before it


def test_record_csv_needs_no_source(server, tmp_path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'[tstorage]\nport = {server.port}\n[daemon]\nstate_dir = "{tmp_path}/s"\n')
    rows = tmp_path / "records.csv"
    rows.write_text("".join(f"5,{i},2,{1000 + i},{i:08x}\n" for i in range(300)))
    result = tstoraged("import", "-c", str(cfg), "--format", "records", str(rows))
    assert result.returncode == 0, result.stdout + result.stderr
    records = sorted(stored(server.port), key=lambda r: r.key.mid)
    assert len(records) == 300
    assert records[7].key == Key(5, 7, 2, 1007, records[7].key.acq)
    assert records[7].value == bytes.fromhex("00000007")


def test_progress_bar_shows_bytes_and_rate(server, tmp_path) -> None:
    cfg = config(tmp_path, server.port)
    a = export(tmp_path / "a.csv", 0, 2000)
    result = tstoraged("import", "-c", str(cfg), "--progress", "always", str(a))
    assert result.returncode == 0
    assert "importing" in result.stdout
    assert "rec/s" in result.stdout


def test_a_missing_file_or_ambiguous_source_is_a_clear_error(server, tmp_path) -> None:
    cfg = config(tmp_path, server.port)
    missing = tstoraged("import", "-c", str(cfg), str(tmp_path / "nope.csv"))
    assert missing.returncode == 2
    assert "not a file" in missing.stderr
    other = tstoraged("import", "-c", str(cfg), "--source", "nope", str(cfg))
    assert other.returncode == 2
    assert "no source named 'nope'" in other.stderr
