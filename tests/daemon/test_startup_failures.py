"""Start-up failures: one line naming the setting and the cause, exit 1, no traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_process import config_text, generator

from tstoraged.testing import DaemonProcess, NotifySocket


def run_daemon(config: Path) -> tuple[int, list[str]]:
    """``tstoraged run`` to its end; its exit code and its output lines (stdout and stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, [
        line for line in (result.stdout + result.stderr).splitlines() if line
    ]


def the_failure(lines: list[str]) -> dict[str, str]:
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    event: dict[str, str] = json.loads(lines[0])
    assert event["event"] == "daemon_start_failed"
    assert event["level"] == "critical"
    return event


def write_config(tmp_path: Path, state: Path, extra: str = "", name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(config_text(2025, state, generator("g", 1, 10), extra))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_port_in_use_by_another_program(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        path = write_config(tmp_path, tmp_path / "state")
        path.write_text(path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        code, lines = run_daemon(path)
    assert code == 1
    event = the_failure(lines)
    assert event["setting"] == "metrics.listen"
    assert event["error"] == (
        f"metrics.listen = '127.0.0.1:{port}': port {port} is in use by another program; "
        "give this daemon a free port"
    )


@pytest.mark.parametrize("spool", [False, True], ids=["spool-off", "spool-on"])
def test_state_dir_that_cannot_be_written(tmp_path: Path, spool: bool) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory's parent should be\n")
    state = blocker / "state"
    path = write_config(tmp_path, state, "[spool]\nenabled = true\n" if spool else "")
    code, lines = run_daemon(path)
    assert code == 1
    event = the_failure(lines)
    assert event["setting"] == "daemon.state_dir"
    assert event["error"].startswith(f"daemon.state_dir = '{state}': not writable: Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    code, lines = run_daemon(write_config(tmp_path, state))
    assert code == 1
    assert "Permission denied" in the_failure(lines)["error"]


def test_spool_and_port_of_a_running_daemon(tmp_path: Path) -> None:
    port = free_port()
    spool = f'[spool]\nenabled = true\ndir = "{tmp_path / "spool"}"\n'
    first = write_config(tmp_path, tmp_path / "a", spool, "a.toml")
    first.write_text(first.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    same_port = write_config(tmp_path, tmp_path / "b", "", "b.toml")
    same_port.write_text(same_port.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    same_spool = write_config(tmp_path, tmp_path / "c", spool, "c.toml")
    with NotifySocket(tmp_path) as notify, DaemonProcess(first, notify=notify) as daemon:
        notify.wait_for("READY=1")
        port_code, port_lines = run_daemon(same_port)
        spool_code, spool_lines = run_daemon(same_spool)
        daemon.kill()
    assert (port_code, spool_code) == (1, 1)
    assert "is in use by a running tstoraged (" in the_failure(port_lines)["error"]
    assert the_failure(spool_lines)["error"] == (
        f"spool.dir = '{tmp_path / 'spool'}': in use by another tstoraged process; "
        "each daemon needs its own spool.dir"
    )
