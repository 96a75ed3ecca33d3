"""The daemon as operators run it: a real `tstoraged run` process, a real server process,
a real sd_notify socket, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, NotifySocket, wait_until


def config_text(port: int, state_dir: Path, sources: str, extra: str = "") -> str:
    return f"""
[tstorage]
host = "127.0.0.1"
port = {port}

[metrics]
listen = "127.0.0.1:0"

[log]
format = "json"

[daemon]
state_dir = "{state_dir}"
drain_timeout = "30s"

[retry]
initial_backoff = "50ms"
max_backoff = "200ms"
{extra}
{sources}
"""


def generator(name: str, cid: int, count: int, rate: int = 0) -> str:
    return f"""
[[sources]]
type = "generator"
name = "{name}"
count = {count}
rate = {rate}
key = {{ cid = {cid}, mid = "{{meter}}", moid = "{{channel}}" }}
"""


def stored_per_cid(port: int) -> Counter[int]:
    with Channel("127.0.0.1", port, BytesPayloadType()) as channel:
        counts: Counter[int] = Counter()
        for item in channel.get_iter(Key.min(), Key.max()):
            if isinstance(item, Record):
                counts[item.key.cid] += 1
            else:  # the final response
                assert item.is_ok(), item
        return counts


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess() as proc:
        yield proc


def test_sigterm_flushes_every_buffered_record(server: ServerProcess, tmp_path: Path) -> None:
    # A batch that never closes by itself: only the drain on SIGTERM can deliver it.
    hold = '[batch]\nflush_interval = "1h"\nmax_records = 1000000\n'
    cfg = tmp_path / "t.toml"
    cfg.write_text(config_text(server.port, tmp_path / "state", generator("g", 3, 5000), hold))
    with NotifySocket(tmp_path) as notify, DaemonProcess(cfg, notify=notify) as daemon:
        notify.wait_for("READY=1")
        wait_until(lambda: daemon.source_status("g").get("received") == 5000, what="5000 received")
        assert daemon.source_status("g")["written"] == 0
        assert daemon.terminate() == 0
        notify.wait_for("STOPPING=1")
    assert stored_per_cid(server.port)[3] == 5000


def test_sd_notify_ready_status_and_stopping(server: ServerProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(config_text(server.port, tmp_path / "state", generator("g", 1, 10, rate=100)))
    with NotifySocket(tmp_path) as notify, DaemonProcess(cfg, notify=notify) as daemon:
        ready = notify.wait_for("READY=1")
        lines = notify.assignments()
        assert any(line.startswith("STATUS=") and "rec/s" in line for line in lines)
        assert daemon.terminate() == 0
        assert notify.wait_for("STOPPING=1") > ready


def test_sighup_applies_a_valid_config_without_losing_records(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "t.toml"
    state = tmp_path / "state"
    hold = '[batch]\nflush_interval = "1h"\nmax_records = 1000000\n'
    cfg.write_text(config_text(server.port, state, generator("a", 1, 3000), hold))
    with NotifySocket(tmp_path) as notify, DaemonProcess(cfg, notify=notify) as daemon:
        ready = notify.wait_for("READY=1")
        wait_until(lambda: daemon.source_status("a").get("received") == 3000, what="a received")
        # Source "a" finished; its records sit in the open batch. The reload adds "b".
        cfg.write_text(
            config_text(server.port, state, generator("a", 1, 3000) + generator("b", 2, 700), hold)
        )
        daemon.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", after=ready)
        notify.wait_for("READY=1", after=reloading)
        applied = daemon.wait_for_event("reload_applied")
        assert applied["added"] == ["b"]
        wait_until(lambda: daemon.source_status("b").get("received") == 700, what="b received")
        assert daemon.terminate() == 0
    counts = stored_per_cid(server.port)
    assert counts[1] == 3000
    assert counts[2] == 700


def test_sighup_with_an_invalid_config_keeps_the_old_one(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "t.toml"
    state = tmp_path / "state"
    cfg.write_text(config_text(server.port, state, generator("a", 1, 200)))
    with NotifySocket(tmp_path) as notify, DaemonProcess(cfg, notify=notify) as daemon:
        ready = notify.wait_for("READY=1")
        cfg.write_text(
            config_text(server.port, state, generator("a", 1, 200) + generator("a", 1, 5)).replace(
                "port = ", 'port = "not a port"  # '
            )
        )
        daemon.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1", after=ready)
        notify.wait_for("READY=1", after=reloading)
        refused = [
            p for event in daemon.wait_for_events("reload_refused", 1) for p in event["problems"]
        ]
        assert any("tstorage.port" in problem for problem in refused), refused
        # Still running on the old config: the endpoint answers, the old source delivered.
        wait_until(lambda: daemon.source_status("a").get("written") == 200, what="a written")
        assert daemon.terminate() == 0
    assert stored_per_cid(server.port)[1] == 200


def test_retries_while_tstorage_is_down_then_delivers_everything(tmp_path: Path) -> None:
    server = ServerProcess()
    server.start()
    port = server.port
    server.kill()  # the port is known, nobody listens: every write attempt fails
    cfg = tmp_path / "t.toml"
    cfg.write_text(config_text(port, tmp_path / "state", generator("g", 5, 2500)))
    with DaemonProcess(cfg) as daemon:
        wait_until(lambda: daemon.status()["retries"] >= 3, what="retries")
        assert daemon.source_status("g").get("written", 0) == 0
        code, body = daemon.get("/readyz")
        assert code == 503
        assert "not connected" in body
        server.start()  # same port as before
        try:
            wait_until(
                lambda: daemon.source_status("g").get("written") == 2500,
                timeout=60,
                what="everything written",
            )
            assert daemon.get("/readyz")[0] == 200
            assert daemon.terminate() == 0
            assert stored_per_cid(port)[5] == 2500
        finally:
            server.kill()


def test_metrics_endpoint_counts_what_was_written(server: ServerProcess, tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(config_text(server.port, tmp_path / "state", generator("meters", 1, 1234)))
    with DaemonProcess(cfg) as daemon:
        wait_until(lambda: daemon.source_status("meters").get("written") == 1234, what="written")
        code, text = daemon.get("/metrics")
        assert code == 200
        assert 'tstoraged_records_written_total{source="meters"} 1234.0' in text
        assert 'tstoraged_records_received_total{source="meters"} 1234.0' in text
        assert "tstoraged_last_successful_write" in text
        assert daemon.get("/healthz")[0] == 200
        assert daemon.terminate() == 0


def test_run_with_a_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[batch]\nmax_records = "many"\n')
    result = subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "batch.max_records" in result.stderr
    assert "many" in result.stderr


def test_status_command_shows_each_source_of_a_running_daemon(
    server: ServerProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(config_text(server.port, tmp_path / "state", generator("press-7", 1, 300)))
    with DaemonProcess(cfg) as daemon:
        wait_until(lambda: daemon.source_status("press-7").get("written") == 300, what="written")
        command = [sys.executable, "-m", "tstoraged.cli", "status", "--url", daemon.url]
        as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60)
        table = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert daemon.terminate() == 0
    assert as_json.returncode == 0
    assert '"press-7"' in as_json.stdout
    assert table.returncode == 0
    assert "press-7" in table.stdout
    assert "300" in table.stdout
