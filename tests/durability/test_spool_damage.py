"""Issue 10 item 3: spool frames lost to disk damage.

A files source can replay: it is rewound to its last intact durable position before the
damage and nothing is lost. A generator cannot: what it lost is counted exactly, in
``tstoraged_spool_records_lost_total{source,reason}``, ``/status`` and one error log line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from faultkit import daemon_config, distinct_mids, generator_source, tail_source

from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, wait_until

pytestmark = pytest.mark.slow

LINES = 60_000


def spool_segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state" / "spool").glob("*.seg"))


def cut_newest_segment_mid_frame(tmp_path: Path) -> None:
    newest = spool_segments(tmp_path)[-1]
    size = newest.stat().st_size
    with newest.open("r+b") as file:
        file.truncate(size // 2)  # in the middle of some frame: acknowledged batches go


def build_backlog(tmp_path: Path, source: str, name: str, count: int) -> tuple[ServerProcess, Path]:
    server = ServerProcess()
    server.start()
    port = server.port
    server.kill()  # nobody takes the batches: they stay in the spool, acknowledged
    cfg = daemon_config(
        tmp_path,
        port,
        source,
        spool='max_size = "4MiB"\n',
        max_records=1000,
        max_batch_size="256KiB",
    )
    with DaemonProcess(cfg) as daemon:
        wait_until(lambda: daemon.source_status(name).get("received") == count, 60, "spooled")
        wait_until(lambda: daemon.status()["spool"]["batches"] >= count // 1000, 30, "acked")
        assert daemon.terminate() == 0
    return server, cfg


def test_files_source_is_rewound_past_lost_frames_and_nothing_is_lost(tmp_path: Path) -> None:
    data = tmp_path / "plc.csv"
    with data.open("w") as file:
        file.write("seq,ts\n")
        file.writelines(f"{i},{1_700_000_000_000_000_000 + i}\n" for i in range(LINES))
    server, cfg = build_backlog(tmp_path, tail_source(data), "plc", LINES)
    cut_newest_segment_mid_frame(tmp_path)
    server.start()
    try:
        with DaemonProcess(cfg) as daemon:
            try:
                wait_until(lambda: distinct_mids(server.port) == LINES, 60, "every line stored")
            except TimeoutError:
                print("\n".join(line for line in daemon.lines if "spool" in line or "plc" in line))
                raise
            torn = daemon.events("spool_torn_tail_cut")
            assert torn, daemon.lines
            assert torn[0]["level"] == "error", torn
            assert torn[0]["acknowledged_batches_lost"] > 0
            rewound = daemon.events("spool_source_rewound")
            assert [event["source"] for event in rewound] == ["plc"]
            assert rewound[0]["records"] > 0
            lost = daemon.events("spool_records_lost")
            assert len(lost) == 1, lost
            assert lost[0]["records"] == 0, lost  # replayed, not lost
            assert daemon.status()["spool"]["records_lost"] == {}
            assert daemon.terminate() == 0
    finally:
        server.kill()


def test_records_a_generator_lost_in_the_spool_are_counted_exactly(tmp_path: Path) -> None:
    count = 60_000
    server, cfg = build_backlog(tmp_path, generator_source(count), "gen", count)
    segments = spool_segments(tmp_path)
    assert len(segments) >= 3, segments
    middle = segments[len(segments) // 2]
    with middle.open("r+b") as file:  # bit rot in an older segment
        file.seek(middle.stat().st_size // 2)
        file.write(b"\xde\xad\xbe\xef" * 8)
    cut_newest_segment_mid_frame(tmp_path)  # and a torn tail of acknowledged batches
    # The generator keeps no position: run again without it, so only the spool delivers.
    cfg.write_text(cfg.read_text().replace('name = "gen"', 'name = "gen"\nenabled = false'))
    server.start()
    try:
        with DaemonProcess(cfg) as daemon:
            daemon.wait_for_event("daemon_started")
            wait_until(lambda: daemon.status()["spool"]["batches"] == 0, 60, "spool drained")
            delivered = distinct_mids(server.port)
            lost_events = daemon.events("spool_records_lost")
            assert len(lost_events) == 1, lost_events
            assert lost_events[0]["level"] == "error"
            assert lost_events[0]["by_source"] == {"gen": count - delivered}
            assert daemon.status()["spool"]["records_lost"] == {"gen": count - delivered}
            _, metrics = daemon.get("/metrics")
            match = re.search(
                r'tstoraged_spool_records_lost_total\{reason="spool_damage",source="gen"\} (\S+)',
                metrics,
            )
            assert match is not None, metrics[-3000:]
            assert float(match.group(1)) == count - delivered
            assert delivered < count
            assert daemon.terminate() == 0
    finally:
        server.kill()
