"""``tstoraged check`` looks at the machine without changing it; the daemon logs the same."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_process import config_text, generator

from tstorage_server.testing import ServerProcess
from tstoraged.config import load_config
from tstoraged.config.preflight import ENVIRONMENT_CHECKS, CheckContext, check_environment
from tstoraged.findings import Finding
from tstoraged.testing import DaemonProcess, NotifySocket, wait_until

FILES = """
[[sources]]
type = "files"
name = "{name}"
{where}
key = {{ cid = 1, mid = "{{meter}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["v"] }}
"""


def files_source(name: str, where: str) -> str:
    return FILES.format(name=name, where=where)


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", "check", "-q", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write(tmp_path: Path, sources: str, extra: str = "", state: Path | None = None) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(config_text(2025, state or tmp_path / "state", sources, extra))
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_machine_ready_for_the_config_passes_silently_and_nothing_is_created(
    tmp_path: Path,
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("meter,ts,v\n")
    sources = files_source("a", f'paths = ["{tmp_path}/in/*.csv"]') + generator("g", 1, 1)
    path = write(tmp_path, sources, "[spool]\nenabled = true\n")
    before = tree(tmp_path)
    result = check(path)
    assert (result.returncode, result.stderr) == (0, "")
    assert tree(tmp_path) == before  # no state dir, no spool, no lock file made


def test_state_dir_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x\n")
    path = write(tmp_path, generator("g", 1, 1), state=tmp_path / "file" / "state")
    result = check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: daemon.state_dir = '{tmp_path}/file/state': cannot be created: "
        f"{tmp_path}/file is not a directory"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_read_only_state_dir_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o500)
    result = check(write(tmp_path, generator("g", 1, 1)))
    assert result.returncode == 1
    assert "daemon.state_dir" in result.stderr
    assert "is not writable by this user" in result.stderr


def test_a_missing_drop_directory_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    path = write(tmp_path, files_source("d", f'mode = "drop"\ndirectory = "{drop}"'))
    result = check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: sources[0].directory = '{drop}': does not exist; create it (the daemon does not)"
    ]
    assert not drop.exists()


def test_a_glob_matching_nothing_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "plc").mkdir()
    patterns = f'paths = ["{tmp_path}/plc/*.csv", "{tmp_path}/nowhere/*.csv"]'
    result = check(write(tmp_path, files_source("t", patterns)))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        f"warning: sources[0].paths[0] = '{tmp_path}/plc/*.csv': matches no file yet",
        f"warning: sources[0].paths[1] = '{tmp_path}/nowhere/*.csv': matches no file yet "
        f"({tmp_path}/nowhere does not exist)",
    ]


def test_a_disabled_source_is_not_looked_at(tmp_path: Path) -> None:
    where = f'mode = "drop"\ndirectory = "{tmp_path}/missing"\nenabled = false'
    assert check(write(tmp_path, files_source("d", where))).stderr == ""


def test_metrics_port_taken_by_another_program_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        path = write(tmp_path, generator("g", 1, 1))
        path.write_text(path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        result = check(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: metrics.listen = '127.0.0.1:{port}': port {port} is in use by another program; "
        "choose a free port"
    ]


def test_port_and_spool_of_the_running_daemon_are_warnings_for_a_reload_check(
    tmp_path: Path,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = write(tmp_path, generator("g", 1, 1), "[spool]\nenabled = true\n")
    path.write_text(path.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    with NotifySocket(tmp_path) as notify, DaemonProcess(path, notify=notify) as daemon:
        notify.wait_for("READY=1")
        result = check(path)
        daemon.kill()
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"warning: spool.dir = '{tmp_path}/state/spool': is in use by a ")
    assert lines[1].startswith(
        f"warning: metrics.listen = '127.0.0.1:{port}': port {port} is in use"
    )
    assert "by a running tstoraged (" in lines[1]


def test_connect_asks_tstorage_for_a_get_acq(tmp_path: Path) -> None:
    with ServerProcess() as server:
        path = tmp_path / "t.toml"
        path.write_text(config_text(server.port, tmp_path / "state", generator("g", 1, 1)))
        answered = check(path, "--connect")
        server.kill()
        refused = check(path, "--connect")
    assert (answered.returncode, answered.stderr) == (0, "")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: tstorage.host = '127.0.0.1:{server.port}': cannot connect: Connection refused"
    ]


def test_config_only_does_not_look_at_the_machine(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    path = write(tmp_path, files_source("d", f'mode = "drop"\ndirectory = "{drop}"'))
    result = check(path, "--config-only")
    assert (result.returncode, result.stderr) == (0, "")


def test_checks_are_a_list_of_functions_that_others_extend(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, generator("g", 1, 1)), env={})

    def spool_fits(context: CheckContext) -> list[Finding]:
        return [Finding("warning", ("spool", "max_size"), "larger than the disk", "'1GiB'")]

    def broken(context: CheckContext) -> list[Finding]:
        raise RuntimeError("boom")

    findings = check_environment(settings, {}, checks=(*ENVIRONMENT_CHECKS, spool_fits, broken))
    assert [str(f) for f in findings] == [
        "warning: spool.max_size = '1GiB': larger than the disk",
        "error: check broken failed: RuntimeError: boom",
    ]


def test_the_daemon_logs_a_glob_that_matches_nothing_and_waits_for_a_missing_drop_dir(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    sources = files_source("t", f'paths = ["{tmp_path}/plc/*.csv"]') + files_source(
        "d", f'mode = "drop"\ndirectory = "{drop}"\npoll_interval = "50ms"\nsettle_time = 0'
    )
    with ServerProcess() as server:
        path = tmp_path / "t.toml"
        path.write_text(config_text(server.port, tmp_path / "state", sources))
        with DaemonProcess(path) as daemon:
            found = {
                e["source"]: e
                for e in wait_until(
                    lambda: (
                        len(daemon.events("environment_problem_found")) == 2
                        and daemon.events("environment_problem_found")
                    ),
                    what="both sources' findings",
                )
            }
            assert found["t"]["level"] == "warning"
            assert found["t"]["setting"] == "paths[0]"
            assert found["t"]["problem"] == f"matches no file yet ({tmp_path}/plc does not exist)"
            assert found["d"]["level"] == "error"
            problem = wait_until(lambda: daemon.source_status("d").get("problem"), what="problem")
            assert problem == f"drop directory {drop} does not exist"
            assert not drop.exists()
            drop.mkdir()
            (drop / "a.csv").write_text("meter,ts,v\n1,1000,2.5\n")
            wait_until(lambda: daemon.source_status("d").get("written") == 1, what="ingested")
            assert daemon.source_status("d")["problem"] is None
            assert daemon.terminate() == 0
