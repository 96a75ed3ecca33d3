"""Issue 10 item 1: the spool on a small file system (a real 20 MiB tmpfs, mounted by the test).

The state directory lives on a 20 MiB file system, TStorage is down and a files source has a
backlog larger than the disk. The spool fills the disk; when TStorage comes back, the space
that delivery frees must be reused until every line is stored, without a restart.

Mounting needs root (CI runs as root); elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import daemon_config, distinct_mids, tail_source

from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, wait_until

pytestmark = pytest.mark.slow

LINES = 150_000
PAD = "x" * 200  # ~230 spooled bytes per line: the backlog is ~35 MB, the disk 20 MiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 20 MiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 20 MiB tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", os.fspath(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", os.fspath(mount_point)], check=False)


def backlog_source(path: Path) -> str:
    return tail_source(path, payload='{ codec = "raw", field = "pad" }')


def write_backlog(path: Path) -> None:
    with path.open("w") as file:
        file.write("seq,ts,pad\n")
        file.writelines(f"{i},{1_700_000_000_000_000_000 + i},{PAD}\n" for i in range(LINES))


def small_disk_config(tmp_path: Path, small_fs: Path, port: int, min_free_space: str) -> Path:
    data = tmp_path / "plc.csv"
    write_backlog(data)
    cfg = daemon_config(tmp_path, port, backlog_source(data), max_records=2000)
    # The default max_size (1 GiB) on purpose: it cannot fit the disk.
    text = cfg.read_text().replace(
        f'state_dir = "{tmp_path / "state"}"', f'state_dir = "{small_fs}"'
    )
    text = text.replace("min_free_space = 0", f'min_free_space = "{min_free_space}"')
    cfg.write_text(text)
    return cfg


@pytest.mark.parametrize("min_free_space", ["0", "1MiB"])
def test_spool_on_a_full_small_disk_resumes_once_delivery_frees_space(
    tmp_path: Path, small_fs: Path, min_free_space: str
) -> None:
    server = ServerProcess()
    server.start()
    port = server.port
    server.kill()  # TStorage down: the backlog goes to the spool until the disk is full
    cfg = small_disk_config(tmp_path, small_fs, port, min_free_space)
    try:
        with DaemonProcess(cfg) as daemon:
            waiting = daemon.wait_for_event("spool_full_appends_waiting", 120)
            assert waiting["reason"] in ("enospc", "min_free_space")
            code, body = daemon.get("/readyz")
            assert code == 503
            assert "TStorage" in body, body  # what the spool waits for: delivery
            server.start()
            wait_until(lambda: distinct_mids(port) == LINES, 180, "every line stored")
            assert daemon.wait_for_event("spool_appends_resumed")
            assert daemon.terminate() == 0
    finally:
        server.kill()


def test_defaults_on_a_small_disk_warn_and_still_deliver_every_line(
    tmp_path: Path, small_fs: Path
) -> None:
    """The defaults (max_size 1 GiB, min_free_space 100 MiB) on a 20 MiB file system: check and
    start-up say that neither fits, and the spool keeps 5 % of the disk free instead of a floor
    that no delivery could ever lift — so the daemon delivers instead of waiting for good."""
    server = ServerProcess()
    server.start()
    try:
        cfg = small_disk_config(tmp_path, small_fs, server.port, "100MiB")
        check = subprocess.run(
            [sys.executable, "-m", "tstoraged.cli", "check", "-q", "-c", os.fspath(cfg)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        warnings = check.stderr
        assert "min_free_space = 100.0 MiB is not below" in warnings, warnings
        assert "keeps 1.0 MiB free instead" in warnings, warnings
        assert "max_size" in warnings, warnings
        assert "20.0 MiB" in warnings, warnings
        with DaemonProcess(cfg) as daemon:
            event = daemon.wait_for_event("spool_settings_exceeding_disk")
            text = json.dumps(event)
            assert "keeps 1.0 MiB free instead" in text
            assert "max_size" in text
            wait_until(lambda: distinct_mids(server.port) == LINES, 180, "every line stored")
            assert daemon.events("spool_blocked_on_disk_space") == []
            assert daemon.terminate() == 0
    finally:
        server.kill()
