"""Issue 10 item 2: ``puta`` stores no line twice when the daemon restarts mid-backlog.

A tailed file already holds a backlog many read chunks long while lines keep being appended.
The daemon is killed (SIGKILL) at random moments while it works through the backlog, and
stopped cleanly (SIGTERM) while the spool is blocked by a TStorage outage. Lines read again
after each restart carry the acq of their place in the file, so they overwrite themselves:
TStorage ends up with every line exactly once.

Scaled down from the field report (1 M lines): 240 k lines of backlog (~7 read chunks of
1 MiB) plus ~2000 lines/s appended, so the suite stays fast; the scenario is the same.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
from faultkit import Appender, daemon_config, distinct_mids, stored, tail_source

from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, NotifySocket, wait_until

# Ten daemon lifetimes over a 240 k-line backlog: minutes on a busy 2-core machine, so the
# suite-wide 120 s safety net is too tight for it (it still ends a hung run).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BACKLOG = 240_000


def write_backlog(path: Path) -> None:
    now = time.time_ns()
    with path.open("w") as file:
        file.write("seq,ts\n")
        file.writelines(f"{i},{now + i}\n" for i in range(BACKLOG))


def puta_config(tmp_path: Path, port: int, data: Path, *, spool: bool) -> Path:
    cfg = daemon_config(
        tmp_path,
        port,
        tail_source(data),
        write_mode="puta",
        spool='max_size = "4MiB"\n',  # small: an outage blocks it within a second
        max_records=5000,
        max_batch_size="256KiB",
        queue_records=20_000,
    )
    if not spool:
        cfg.write_text(cfg.read_text().replace("enabled = true", "enabled = false"))
    return cfg


def count_duplicates(port: int, total: int) -> int:
    per_mid = Counter(key.mid for key in stored(port))
    assert set(per_mid) == set(range(total)), "lines were lost"
    return sum(per_mid.values()) - total


def kill_mid_backlog(cfg: Path, notify: NotifySocket, rng: random.Random, kills: int) -> None:
    for _ in range(kills):
        with DaemonProcess(cfg, notify=notify) as daemon:
            before = len(notify.assignments())
            notify.wait_for("READY=1", after=before)
            wait_until(lambda: daemon.source_status("plc").get("received", 0) > 0, what="reading")
            time.sleep(rng.uniform(0.1, 0.8))  # a random moment to die at
            daemon.kill()


def deliver_all(cfg: Path, port: int, total: int) -> None:
    with DaemonProcess(cfg) as daemon:
        wait_until(lambda: distinct_mids(port) == total, 180, "every line stored")
        assert daemon.terminate() == 0


def test_puta_backlog_kill9_and_clean_stops_during_an_outage_store_each_line_once(
    tmp_path: Path, record_property: object
) -> None:
    rng = random.Random(10)
    data = tmp_path / "plc.csv"
    write_backlog(data)
    with NotifySocket(tmp_path) as notify:
        # On disk: what it stored before its kill is still there after, as with TStorage.
        server = ServerProcess(data_dir=tmp_path / "tstorage")
        server.start()
        port = server.port
        cfg = puta_config(tmp_path, port, data, spool=True)
        try:
            with Appender(data, 20, 0.01, first_seq=BACKLOG) as appender:
                kill_mid_backlog(cfg, notify, rng, kills=5)
                # Clean stops while TStorage is down and the spool is blocked: what the
                # spool could not take is re-read after the restart.
                server.kill()
                for _ in range(2):
                    with DaemonProcess(cfg) as daemon:
                        daemon.wait_for_event("spool_full_appends_waiting", 60)
                        assert daemon.terminate() == 0
                server.start()
                kill_mid_backlog(cfg, notify, rng, kills=3)
                total = BACKLOG + appender.stop()
            deliver_all(cfg, port, total)
            duplicates = count_duplicates(port, total)
        finally:
            server.kill()
    print(f"puta, spool on: {total} lines, 8 kill -9 and 2 SIGTERM, {duplicates} duplicates")
    assert duplicates == 0


def test_puta_backlog_kill9_without_spool_stores_each_line_once(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = tmp_path / "plc.csv"
    write_backlog(data)
    with NotifySocket(tmp_path) as notify, ServerProcess() as server:
        cfg = puta_config(tmp_path, server.port, data, spool=False)
        with Appender(data, 20, 0.01, first_seq=BACKLOG) as appender:
            kill_mid_backlog(cfg, notify, rng, kills=5)
            total = BACKLOG + appender.stop()
        deliver_all(cfg, server.port, total)
        duplicates = count_duplicates(server.port, total)
    print(f"puta, spool off: {total} lines, 5 kill -9, {duplicates} duplicates")
    assert duplicates == 0
