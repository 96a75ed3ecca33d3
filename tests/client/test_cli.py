"""``python -m tstorage_client`` against the project's server, as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tstorage_server.testing import RunningServer, serve

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(memory=True) as running:
        yield running


def _run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tstorage_client", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _cli(server: RunningServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return _run("--host", server.host, "--port", str(server.port), *args, stdin=stdin)


def _records_of(server: RunningServer, cid: int) -> list[list[str]]:
    got = _cli(
        server,
        "get",
        "--csv",
        "--min",
        f"{cid},{I64_MIN},{I32_MIN},{I64_MIN},{I64_MIN}",
        "--max",
        f"{cid + 1},{I64_MAX},{I32_MAX},{I64_MAX},{I64_MAX}",
    )
    assert got.returncode == 0, got.stderr
    return [line.split(",") for line in got.stdout.splitlines()[1:]]


def test_example_app_says_where_it_writes_then_puts_and_prints_three_records(
    server: RunningServer,
) -> None:
    result = _cli(server)
    assert result.returncode == 0, result.stderr
    assert "writing 3 records (cids 1-3" in result.stderr
    assert f"to TStorage at {server.host}:{server.port}" in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Cid: 1, Mid:4, Moid: 7, Cap:")
    assert "PayloadType( int: 10, float: 24.0, bool: True)" in lines[0]
    assert _cli(server, "example").stdout.count("Cid: ") == 3


def test_put_csv_then_get_csv_and_acq(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("# cid,mid,moid,cap,payload\n100,1,2,3,0a0b\n100,2,2,4,\n101,1,1,1,ff\n")
    put = _cli(server, "put", str(source))
    assert put.returncode == 0, put.stderr
    assert put.stdout.startswith("put OK")
    got = _cli(
        server, "get", "--min", "100,0,0,0,0", "--max", "102,10,10,10,9223372036854775807", "--csv"
    )
    assert got.returncode == 0, got.stderr
    header, *lines = got.stdout.splitlines()
    assert header == "cid,mid,moid,cap,acq,payload"
    rows = [line.split(",") for line in lines]
    assert [(r[0], r[1], r[3], r[5]) for r in rows] == [
        ("100", "1", "3", "0a0b"),
        ("100", "2", "4", ""),
        ("101", "1", "1", "ff"),
    ]
    acq = _cli(server, "acq", "--min", "100,0,0,0,0", "--max", "102,10,10,10,9223372036854775807")
    assert acq.returncode == 0
    assert int(acq.stdout) >= max(int(r[4]) for r in rows)


def test_put_from_stdin_and_plain_get(server: RunningServer) -> None:
    assert _cli(server, "put", "-", stdin="200,5,5,5,01\n").returncode == 0
    got = _cli(server, "get", "--min", "200,0,0,0,0", "--max", "201,9,9,9,9223372036854775807")
    assert got.returncode == 0
    assert got.stdout.startswith("cid=200 mid=5 moid=5 cap=5 acq=")
    assert got.stdout.rstrip().endswith("payload=01")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("301,1,1,zz,00", "must be integers"),
        ("301,1,1,1,0g", "not hexadecimal"),
        ("-1,1,1,1,00", "is not valid"),
        ("301,1,4294967296,1,00", "is not valid"),
        ("301,1,1,00", "got 4 fields"),
    ],
    ids=["not-a-number", "bad-hex", "negative-cid", "moid-out-of-range", "short-row"],
)
def test_an_invalid_row_is_reported_and_nothing_is_stored(
    server: RunningServer, tmp_path: Path, row: str, reason: str
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(f"301,1,1,1,00\n{row}\n301,3,1,1,00\n")
    result = _cli(server, "put", str(source))
    assert result.returncode == 2
    assert f"{source}:2:" in result.stderr
    assert reason in result.stderr
    assert "nothing was stored" in result.stderr
    assert _records_of(server, 301) == []


def test_skip_invalid_skips_bad_rows_and_says_how_many(
    server: RunningServer, tmp_path: Path
) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("302,1,1,1,00\n-1,1,1,1,00\n302,2,1,1,zz\n302,3,1,1,01\n")
    result = _cli(server, "put", "--skip-invalid", str(source))
    assert result.returncode == 0, result.stderr
    assert "skipped 2 invalid row(s)" in result.stderr
    assert f"{source}:2:" in result.stderr
    assert f"{source}:3:" in result.stderr
    assert result.stdout.startswith("put OK: 2 records")
    assert [(r[1], r[5]) for r in _records_of(server, 302)] == [("1", "00"), ("3", "01")]


def test_a_get_csv_dump_round_trips_through_put(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("303,1,2,3,0a0b\n303,2,2,4,\n")
    assert _cli(server, "put", str(source)).returncode == 0
    dump = _cli(server, "get", "--csv", "--min", "303,0,0,0,0", "--max", f"304,9,9,9,{I64_MAX}")
    assert dump.returncode == 0
    dumped = tmp_path / "dump.csv"
    dumped.write_text(dump.stdout.replace("303,", "304,"))  # the same records under cid 304
    again = _cli(server, "put", str(dumped))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("puta OK: 2 records")
    copied = _records_of(server, 304)
    assert [r[1:] for r in copied] == [r[1:] for r in _records_of(server, 303)]  # acq kept


def test_a_get_csv_dump_is_accepted_by_tstoraged_import(
    server: RunningServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("305,1,2,3,0a0b\n305,2,2,4,ff\n")
    assert _cli(server, "put", str(source)).returncode == 0
    dump = _cli(server, "get", "--csv", "--min", "305,0,0,0,0", "--max", f"306,9,9,9,{I64_MAX}")
    dumped = tmp_path / "dump.csv"
    dumped.write_text(dump.stdout.replace("305,", "306,"))
    config = tmp_path / "tstoraged.toml"
    config.write_text(
        f'[tstorage]\nhost = "{server.host}"\nport = {server.port}\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[batch]\nflush_interval = "100ms"\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tstoraged.cli",
            "import",
            "--config",
            str(config),
            "--format",
            "records",
            "--progress",
            "never",
            str(dumped),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(r[1], r[2], r[3], r[5]) for r in _records_of(server, 306)] == [
        ("1", "2", "3", "0a0b"),
        ("2", "2", "4", "ff"),
    ]


def test_options_work_after_the_command_and_from_the_environment(server: RunningServer) -> None:
    after = _run("acq", "--host", server.host, "--port", str(server.port))
    assert after.returncode == 0, after.stderr
    int(after.stdout)
    env = {"TSTORAGE_HOST": server.host, "TSTORAGE_PORT": str(server.port)}
    from_env = _run("acq", env=env)
    assert from_env.returncode == 0, from_env.stderr
    bad = _run("acq", env={"TSTORAGE_PORT": "http"})
    assert bad.returncode == 2
    assert "TSTORAGE_PORT='http' is not a port number" in bad.stderr


def test_version_and_help_list_the_commands() -> None:
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("tstorage_client ")
    shown = _run("--help")
    assert shown.returncode == 0
    for command in ("put", "get", "acq", "example"):
        assert re.search(rf"^\s+{command}\s+\S", shown.stdout, re.MULTILINE), command
    assert "--host" in _run("get", "--help").stdout


def test_bad_key_argument_is_a_usage_error(server: RunningServer) -> None:
    result = _cli(server, "get", "--min", "1,2,3")
    assert result.returncode == 2
    assert "expected cid,mid,moid,cap,acq" in result.stderr


def test_refused_range_fails_with_the_status(server: RunningServer) -> None:
    # An empty box: TStorage refuses it for GET (GET_ACQ answers it).
    result = _cli(server, "get", "--min", "5,0,0,0,0", "--max", "5,1,1,1,1")
    assert result.returncode == 1
    assert "get failed: BAD_REQUEST" in result.stderr


def test_unreachable_server_fails_cleanly() -> None:
    with serve(memory=True) as running:
        host, port = running.host, running.port
    result = subprocess.run(
        [sys.executable, "-m", "tstorage_client", "--host", host, "--port", str(port), "acq"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot connect" in result.stderr
