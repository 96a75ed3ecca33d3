"""The outage log's state machine and cause classification (fake clock, captured events).

The same events from real processes (a killed, a stopped and a TLS-mismatched server) are in
tests/durability/test_outage_visibility.py.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import pytest

from tstoraged.observe.reasons import RETRY_REASONS, retry_reason
from tstoraged.pipeline.outage import (
    REASONS,
    Cause,
    OutageLog,
    connect_failure,
    request_failure,
)

REFUSED = Cause("connection_refused", "connection refused: [Errno 111]")
CLOSED = Cause("disconnected", "the connection was closed before TStorage answered")
TARGET = "127.0.0.1:2025"


class Events:
    """A logger that keeps (level, event, fields), like structlog's capture_logs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.seen.append((level, event, fields))

    def names(self, *, level: str | None = None) -> list[str]:
        return [e for lv, e, _ in self.seen if level is None or lv == level]

    def last(self, event: str) -> dict[str, Any]:
        return [f for _, e, f in self.seen if e == event][-1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outage_log(waiting: list[int] | None = None) -> tuple[OutageLog, Events, Clock]:
    events, clock = Events(), Clock()
    counts = waiting if waiting is not None else [0]
    log = OutageLog(report_interval=30.0, waiting=lambda: counts[0], clock=clock, logger=events)
    return log, events, clock


def test_an_outage_is_one_line_at_its_start_one_per_interval_and_one_at_its_end() -> None:
    waiting = [500]
    log, events, clock = outage_log(waiting)
    log.succeeded(TARGET, tls=False)
    for _ in range(40):  # a retry every second for 40 s
        log.failed(TARGET, REFUSED, retry_in=1.0)
        clock.now += 1.0
    waiting[0] = 4500
    log.succeeded(TARGET, tls=False)
    assert events.names(level="warning") == [
        "tstorage_outage_started",
        "tstorage_outage_continuing",
    ]
    started = events.last("tstorage_outage_started")
    assert (started["reason"], started["records_waiting"], started["retrying_in_s"]) == (
        "connection_refused",
        500,
        1.0,
    )
    assert started["error"] == REFUSED.error
    continuing = events.last("tstorage_outage_continuing")
    assert (continuing["outage_s"], continuing["failed_attempts"]) == (30.0, 31)
    restored = events.last("tstorage_restored")
    assert (restored["outage_s"], restored["failed_attempts"], restored["records_waiting"]) == (
        40.0,
        40,
        4500,
    )
    assert all(fields.get("rate_limit") is False for level, _, fields in events.seen)


def test_describe_is_the_current_outage_for_the_status_document() -> None:
    log, _, clock = outage_log()
    log.succeeded(TARGET, tls=False)
    assert log.describe() is None
    log.failed(TARGET, REFUSED, retry_in=1.0)
    clock.now += 95.0
    log.failed(TARGET, REFUSED, retry_in=2.0)
    outage = log.describe()
    assert outage is not None
    assert (outage["outage_s"], outage["failed_attempts"]) == (95.0, 2)
    assert (outage["reason"], outage["error"]) == (REFUSED.reason, REFUSED.error)
    assert isinstance(outage["since"], float)
    log.succeeded(TARGET, tls=False)
    assert log.describe() is None


def test_connected_once_per_target_and_the_backlog_delivered_after_a_restore() -> None:
    waiting = [0]
    log, events, clock = outage_log(waiting)
    log.failed(TARGET, REFUSED, retry_in=0.5)  # down at start: an outage at once
    clock.now += 5
    waiting[0] = 1200
    log.succeeded(TARGET, tls=True)
    log.succeeded(TARGET, tls=True)
    assert events.names() == [
        "tstorage_outage_started",
        "tstorage_connected",
        "tstorage_restored",
    ]
    assert events.last("tstorage_connected") == {"target": TARGET, "tls": True, "rate_limit": False}
    log.delivered(1000)
    assert "tstorage_backlog_delivered" not in events.names()
    clock.now += 2
    log.delivered(700)
    delivered = events.last("tstorage_backlog_delivered")
    assert (delivered["records"], delivered["seconds"]) == (1700, 2.0)
    log.delivered(100)
    assert events.names().count("tstorage_backlog_delivered") == 1


def test_a_working_connection_found_closed_and_reopened_is_no_outage() -> None:
    log, events, clock = outage_log()
    log.succeeded(TARGET, tls=False)
    log.failed(TARGET, CLOSED, retry_in=0.5)  # e.g. TStorage closed an idle connection
    log.succeeded(TARGET, tls=False)
    assert events.names(level="warning") == []
    assert events.names(level="debug") == ["tstorage_connection_lost", "tstorage_reconnected"]
    # If the reconnect fails, the outage counts from the first failure and names the cause.
    log.failed(TARGET, CLOSED, retry_in=0.5)
    clock.now += 0.5
    log.failed(TARGET, REFUSED, retry_in=1.0)
    assert events.last("tstorage_outage_started")["reason"] == "connection_refused"
    clock.now += 1.0
    log.succeeded(TARGET, tls=False)
    assert events.last("tstorage_restored")["outage_s"] == 1.5


def test_a_timeout_on_a_working_connection_is_an_outage_at_once() -> None:
    log, events, _ = outage_log()
    log.succeeded(TARGET, tls=False)
    log.failed(TARGET, request_failure(10.0, timeout=10.0), retry_in=0.5)
    started = events.last("tstorage_outage_started")
    assert started["reason"] == "timeout"
    assert started["error"] == "no answer within 10 s (tstorage.timeout)"
    assert log.outage_s == 0.0
    assert log.last_cause is not None


@pytest.mark.parametrize(
    ("exc", "reason", "words"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "connection_refused", "refused"),
        (TimeoutError(), "timeout", "no connection within 3 s"),
        (
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]"),
            "tls_error",
            "certificate not accepted",
        ),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls_error", "TLS"),
        (socket.gaierror(-2, "Name or service not known"), "connection_error", "not resolved"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection_error", "reset"),
        (OSError(113, "No route to host"), "connection_error", "unreachable"),
    ],
)
def test_connect_errors_are_classified_with_their_message(
    exc: OSError, reason: str, words: str
) -> None:
    cause = connect_failure(exc, connect_timeout=3.0)
    assert cause.reason == reason
    assert words in cause.error


def test_a_request_without_answer_is_a_timeout_only_when_it_took_the_whole_timeout() -> None:
    assert request_failure(2.0, timeout=2.0).reason == "timeout"
    assert request_failure(0.01, timeout=2.0).reason == "disconnected"


def test_reasons_are_the_labels_of_the_retry_counter() -> None:
    assert set(REASONS) == set(RETRY_REASONS)
    assert [retry_reason(reason) for reason in REASONS] == list(REASONS)
