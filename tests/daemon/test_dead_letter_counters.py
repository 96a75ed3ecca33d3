"""The dead-letter counters agree with the dead-letter file, with labels from a fixed set."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_daemon_process import config_text

from tstorage_server.testing import ServerProcess
from tstoraged.observe.reasons import DEAD_LETTER_REASONS
from tstoraged.testing import DaemonProcess, wait_until

SOURCE = """
[[sources]]
type = "files"
name = "line-3"
mode = "drop"
directory = "{drop}"
settle_time = 0
poll_interval = "50ms"
key = {{ cid = 7, mid = "{{meter}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["v"] }}
"""


def test_rejected_lines_show_in_dead_lettered_counters_as_in_the_file(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    rows = ["meter,ts,v"]
    for i in range(30):
        rows.append(f"{i},{1000 + i},{i}.5")
    rows += [f"{i},{2000 + i}" for i in range(12)]  # a field missing: wrong_field_count
    rows += [f"x{i},{3000 + i},1.0" for i in range(9)]  # meter not a number: mapping_failed
    data = "\n".join(rows).encode() + b"\n"
    data += b"".join(b"1,4000,\xff" + bytes([0x30 + i]) * i + b"\n" for i in range(15))
    with ServerProcess() as server:
        path = tmp_path / "t.toml"
        path.write_text(config_text(server.port, tmp_path / "state", SOURCE.format(drop=drop)))
        with DaemonProcess(path) as daemon:
            (drop / "a.csv").write_bytes(data)
            wait_until(lambda: not (drop / "a.csv").exists(), what="file ingested")
            status = daemon.source_status("line-3")
            _, metrics = daemon.get("/metrics")
            assert daemon.terminate() == 0
    lines = (tmp_path / "state" / "dead-letter.jsonl").read_text().splitlines()
    assert len(lines) == 12 + 9 + 15
    assert status["written"] == 30
    assert status["dead_lettered"] == len(lines)
    assert status["rejected"] == len(lines)
    counted = {
        match["reason"]: float(match["value"])
        for match in re.finditer(
            r'^tstoraged_records_dead_lettered_total\{reason="(?P<reason>[^"]*)",'
            r'source="line-3"\} (?P<value>\S+)$',
            metrics,
            re.MULTILINE,
        )
    }
    assert counted == {"wrong_field_count": 12, "mapping_failed": 9, "undecodable": 15}
    assert set(counted) <= set(DEAD_LETTER_REASONS)
    reasons = {json.loads(line)["reason"] for line in lines}
    assert any("column" in reason for reason in reasons)  # the file keeps the whole reason
