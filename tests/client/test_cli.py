"""``python -m tstorage_client`` against the project's server, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tstorage_server.testing import RunningServer, serve


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve(memory=True) as running:
        yield running


def _cli(server: RunningServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tstorage_client", "--host", server.host]
    return subprocess.run(
        [*command, "--port", str(server.port), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_example_app_puts_and_prints_three_records(server: RunningServer) -> None:
    result = _cli(server)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("Cid: 1, Mid:4, Moid: 7, Cap:")
    assert "PayloadType( int: 10, float: 24.0, bool: True)" in lines[0]


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
    rows = [line.split(",") for line in got.stdout.splitlines()]
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


def test_bad_csv_row_names_the_line_and_fails(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("1,1,1,1,00\n1,1,1,zz,00\n")
    result = _cli(server, "put", str(source))
    assert result.returncode == 2
    assert f"{source}:2:" in result.stderr


def test_bad_key_argument_is_a_usage_error(server: RunningServer) -> None:
    result = _cli(server, "get", "--min", "1,2,3")
    assert result.returncode == 2
    assert "expected cid,mid,moid,cap,acq" in result.stderr


def test_refused_range_fails_with_the_status(server: RunningServer) -> None:
    result = _cli(server, "acq", "--min", "5,0,0,0,0", "--max", "5,1,1,1,1")
    assert result.returncode == 1
    assert "acq failed: ERROR" in result.stderr


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
