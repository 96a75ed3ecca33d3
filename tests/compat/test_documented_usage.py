"""The reference client's documented usage example runs unchanged against our server.

The example connects to 127.0.0.1:2025. To run it unchanged without depending on that port
being free, it runs in a network namespace of its own (``unshare --net``, root on CI and on
the developers' machines), where the project's server listens on 2025.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d.*\[\s*\w+\s*\]")


def _in_own_network(*command: str) -> subprocess.CompletedProcess[str]:
    script = 'ip link set lo up && exec "$@"'
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_documented_example_runs_unchanged() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a private network")
    probe = _in_own_network("true")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    result = _in_own_network(sys.executable, str(HERE / "run_documented_usage.py"))
    assert result.returncode == 0, result.stderr
    # The server's own log lines share stdout; the example's output is the rest.
    lines = [line for line in result.stdout.splitlines() if not LOG_LINE.match(line)]
    assert lines[0] == "1 10"  # the get
    assert lines[1].startswith("Key(cid=1, mid=4, moid=7, cap=")  # the get_iter
    assert lines[1].endswith(" (10, 24.0, True)")
    assert len(lines) == 2
