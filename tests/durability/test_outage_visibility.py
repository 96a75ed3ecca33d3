"""An outage seen in the log, against real processes: tstorage-server killed, restarted, stopped
(SIGSTOP) or serving a certificate the daemon does not trust; the daemon a real process.

The log says why at the first failure (the cause classified, with the real error), then once
per ``[retry] outage_report_interval`` with the outage so far and the records waiting, and marks
the edges (``tstorage_connected``, ``tstorage_restored``, ``tstorage_backlog_delivered``); no
line per retry. Stopping during an outage says how many records the spool keeps, and
``drain_incomplete`` is only for records that were in memory only.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from faultkit import daemon_config, distinct_mids, generator_source

from tstorage_server.testing import ServerProcess
from tstoraged.testing import DaemonProcess, wait_until

pytestmark = pytest.mark.slow

REPORT_INTERVAL = 0.5
FAST_RETRY = f'outage_report_interval = "{REPORT_INTERVAL}s"\n'
OUTAGE_WARNINGS = ("tstorage_outage_started", "tstorage_outage_continuing")


def warnings_and_errors(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e.get("level") in ("warning", "error")]


def server_gone() -> ServerProcess:
    """A server started and killed: nobody listens on its ``port`` until it starts again."""
    server = ServerProcess().start()
    server.kill()
    return server


def stop_once_all_received(cfg: Path, count: int) -> DaemonProcess:
    """Run the daemon while TStorage is down until its generator handed over ``count``
    records, then SIGTERM it (exit 0)."""
    with DaemonProcess(cfg) as daemon:
        daemon.wait_for_event("tstorage_outage_started")
        wait_until(lambda: daemon.source_status("gen").get("received") == count, what="all in")
        assert daemon.terminate() == 0
    return daemon


def test_an_outage_is_logged_with_its_cause_then_periodically_and_its_edges(
    tmp_path: Path,
) -> None:
    with ServerProcess() as server:
        cfg = daemon_config(tmp_path, server.port, generator_source(0, rate=2000), retry=FAST_RETRY)
        with DaemonProcess(cfg) as daemon:
            connected = daemon.wait_for_event("tstorage_connected")
            assert connected["target"] == f"127.0.0.1:{server.port}"
            wait_until(lambda: daemon.source_status("gen").get("written", 0) > 0, what="flow")
            server.kill()
            started = daemon.wait_for_event("tstorage_outage_started")
            assert started["reason"] == "connection_refused", started
            assert "refused" in started["error"]
            assert started["records_waiting"] >= 0
            wait_until(
                lambda: len(daemon.events("tstorage_outage_continuing")) >= 3,
                what="three periodic outage lines",
            )
            server.start()  # the same port
            restored = daemon.wait_for_event("tstorage_restored")
            delivered = daemon.wait_for_event("tstorage_backlog_delivered")
            assert daemon.terminate() == 0
        continuing = daemon.events("tstorage_outage_continuing")
        outage_s = [event["outage_s"] for event in continuing]
        # At most one line per interval of the outage, whatever the retries did meanwhile.
        assert all(b - a >= REPORT_INTERVAL - 0.1 for a, b in itertools.pairwise(outage_s))
        attempts = [event["failed_attempts"] for event in continuing]
        assert attempts == sorted(attempts)
        for event in continuing:
            assert event["reason"] == "connection_refused"
            assert event["records_waiting"] > 0  # the generator goes on into the spool
        assert restored["outage_s"] >= outage_s[-1]
        assert restored["failed_attempts"] >= attempts[-1]
        assert restored["records_waiting"] > 0
        assert delivered["records"] >= restored["records_waiting"]
        assert len(daemon.events("tstorage_connected")) == 1
        # Not a line per retry: the retries are counted, logged at debug only.
        assert daemon.events("write_retried") == []
        assert [e["event"] for e in warnings_and_errors(daemon)] == [
            "tstorage_outage_started",
            *["tstorage_outage_continuing"] * len(continuing),
        ]


@pytest.fixture
def untrusted_tls(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A TLS server whose certificate comes from a CA the daemon is not given."""
    server_ca, other_ca = trustme.CA(), trustme.CA()
    cert = server_ca.issue_cert("127.0.0.1")
    chain, key, trusted = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(key)
    cert.cert_chain_pems[0].write_to_path(chain)
    other_ca.cert_pem.write_to_path(trusted)
    with ServerProcess(tls=(chain, key)) as server:
        yield server, trusted


@pytest.mark.parametrize("cause", ["connection_refused", "timeout", "tls_error"])
def test_the_first_failure_names_its_real_cause(
    tmp_path: Path, cause: str, request: pytest.FixtureRequest
) -> None:
    tstorage = 'timeout = "500ms"\nconnect_timeout = "500ms"'
    server: ServerProcess | None = None
    if cause == "connection_refused":
        server = server_gone()
        port = server.port
    elif cause == "timeout":
        server = ServerProcess().start()
        port = server.port
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)  # accepts (the kernel does), never answers
    else:
        server, ca_file = request.getfixturevalue("untrusted_tls")
        port = server.port
        tstorage += f'\n[tstorage.tls]\nenabled = true\nca_file = "{ca_file}"'
    try:
        cfg = daemon_config(
            tmp_path, port, generator_source(100), tstorage=tstorage, retry=FAST_RETRY
        )
        with DaemonProcess(cfg) as daemon:
            started = daemon.wait_for_event("tstorage_outage_started")
            wait_until(lambda: daemon.events("tstorage_outage_continuing"), what="a second line")
            outage = daemon.status()["outage"]  # /status (and `tstoraged status`) say it too
            assert daemon.terminate() == 0
    finally:
        if server is not None:
            if cause == "timeout" and server.process is not None:
                server.process.send_signal(signal.SIGCONT)
            server.kill()
    assert started["reason"] == cause, started
    expected = {
        "connection_refused": "connection refused",
        "timeout": "no answer within 0.5 s",
        "tls_error": "certificate not accepted: unable to get local issuer certificate",
    }[cause]
    assert expected in started["error"], started
    assert started["target"] == f"127.0.0.1:{port}"
    assert daemon.events("tstorage_outage_continuing")[0]["reason"] == cause
    assert outage["reason"] == cause, outage
    assert expected in outage["error"], outage
    assert outage["failed_attempts"] >= 2
    assert outage["outage_s"] > 0
    assert daemon.events("tstorage_connected") == []


def test_stopping_during_an_outage_keeps_the_spooled_records_without_alarm(
    tmp_path: Path,
) -> None:
    server = server_gone()
    port = server.port
    count = 5000
    cfg = daemon_config(tmp_path, port, generator_source(count), retry=FAST_RETRY)
    try:
        daemon = stop_once_all_received(cfg, count)
        kept = daemon.events("spool_backlog_kept")
        assert len(kept) == 1, daemon.lines[-20:]
        assert kept[0]["level"] == "info"
        assert kept[0]["records"] == count
        assert kept[0]["reason"] == "connection_refused"
        assert daemon.events("drain_incomplete") == []
        stopped = daemon.events("daemon_stopped")[0]
        assert (stopped["drained"], stopped["undelivered_records"]) == (True, 0)
        assert stopped["spooled_records"] == count
        # They are really on disk: the next start delivers them.
        server.start()
        cfg.write_text(cfg.read_text().replace('name = "gen"', 'name = "gen"\nenabled = false'))
        with DaemonProcess(cfg) as daemon:
            wait_until(lambda: distinct_mids(port) == count, 60, "the spool delivered")
            assert daemon.terminate() == 0
    finally:
        server.kill()


def test_stopping_during_an_outage_without_spool_reports_what_only_memory_held(
    tmp_path: Path,
) -> None:
    count = 3000
    cfg = daemon_config(
        tmp_path,
        server_gone().port,
        generator_source(count),
        spool_enabled=False,
        retry=FAST_RETRY,
    )
    daemon = stop_once_all_received(cfg, count)
    (incomplete,) = daemon.events("drain_incomplete")
    assert incomplete["level"] == "warning"
    assert incomplete["undelivered_records"] == count
    assert incomplete["persisted"] is False
    assert daemon.events("spool_backlog_kept") == []
    stopped = daemon.events("daemon_stopped")[0]
    assert (stopped["drained"], stopped["undelivered_records"]) == (False, count)
    assert stopped["spooled_records"] == 0
