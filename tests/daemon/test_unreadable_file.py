"""A file the daemon cannot read is an error of its source in ``tstoraged status``, retried."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_daemon_process import config_text

from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, wait_until

# Root reads any file; without these two capabilities it is refused like anybody else.
NO_DAC_OVERRIDE = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]

SOURCE = """
[[sources]]
type = "files"
name = "line-3"
paths = ["{directory}/*.csv"]
poll_interval = "50ms"
unreadable_retry_interval = "200ms"
key = {{ cid = 7, mid = "{{meter}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["v"] }}
"""


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv here"
)
def test_an_unreadable_file_is_a_problem_of_its_source_until_it_can_be_read(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "plc"
    directory.mkdir()
    (directory / "a.csv").write_text("meter,ts,v\n1,1000,1.5\n")
    locked = directory / "b.csv"
    locked.write_text("meter,ts,v\n2,2000,2.5\n3,3000,3.5\n")
    locked.chmod(0)
    prefix = NO_DAC_OVERRIDE if os.geteuid() == 0 else []
    with ServerProcess() as server:
        path = tmp_path / "t.toml"
        path.write_text(
            config_text(server.port, tmp_path / "state", SOURCE.format(directory=directory))
        )
        with DaemonProcess(path, prefix=prefix) as daemon:
            problem = wait_until(
                lambda: daemon.source_status("line-3").get("problem"), what="problem"
            )
            assert problem == f"cannot read {locked}: Permission denied; retried every 0.2s"
            assert daemon.source_status("line-3")["details"] == {
                "unreadable_files": {str(locked): "Permission denied"}
            }
            assert daemon.get("/readyz")[0] == 503
            shown = subprocess.run(
                [sys.executable, "-m", "tstoraged.cli", "status", "--url", daemon.url],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "COLUMNS": "300"},
            )
            assert "cannot read" in shown.stdout, shown.stdout
            locked.chmod(0o644)
            wait_until(lambda: daemon.source_status("line-3").get("written") == 3, what="all")
            assert daemon.source_status("line-3")["problem"] is None
            assert daemon.terminate() == 0
