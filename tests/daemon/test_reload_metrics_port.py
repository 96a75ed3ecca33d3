"""A reload that moves the metrics endpoint to a port that is in use: the daemon keeps
serving where it was, says so, and a later reload moves it once the port is free."""

from __future__ import annotations

import signal
import socket
import urllib.request
from pathlib import Path

from test_daemon_process import config_text, generator

from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, NotifySocket


def answers_status(url: str) -> bool:
    with urllib.request.urlopen(url + "/status", timeout=10) as response:
        return bool(response.status == 200)


def sighup(daemon: DaemonProcess, notify: NotifySocket, after: int) -> int:
    """SIGHUP and wait until the daemon is ready again; returns the READY=1 index."""
    daemon.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1", after=after)
    return notify.wait_for("READY=1", after=reloading)


def test_a_busy_new_metrics_port_keeps_the_old_listener_until_a_reload_can_move_it(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "t.toml"
    state = tmp_path / "state"
    source = generator("g", 1, 10)
    busy = socket.create_server(("127.0.0.1", 0))
    busy_port = busy.getsockname()[1]
    with ServerProcess() as server:
        cfg.write_text(config_text(server.port, state, source))
        with NotifySocket(tmp_path) as notify, DaemonProcess(cfg, notify=notify) as daemon:
            ready = notify.wait_for("READY=1")
            old_url = daemon.url  # port 0 in the config: the port the daemon was given
            moved = config_text(server.port, state, source).replace(
                'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{busy_port}"'
            )
            cfg.write_text(moved)
            ready = sighup(daemon, notify, ready)
            # The log and sd_notify are separate channels: wait for the events themselves.
            (applied,) = daemon.wait_for_events("reload_applied", 1)
            assert "metrics.listen" in applied["settings"]
            incomplete = daemon.wait_for_event("reload_incomplete")
            assert incomplete["problem"].startswith(
                f"metrics.listen = '127.0.0.1:{busy_port}': cannot listen: "
            )
            assert incomplete["problem"].endswith(f"; still serving on {old_url}")
            assert incomplete["level"] == "error"
            assert answers_status(old_url)  # the same address as before the reload

            # The port is freed; the same config, reloaded again, now takes effect.
            busy.close()
            sighup(daemon, notify, ready)
            daemon.wait_for_events("reload_applied", 2)
            assert len(daemon.events("reload_incomplete")) == 1
            assert answers_status(f"http://127.0.0.1:{busy_port}")
            assert daemon.terminate() == 0
