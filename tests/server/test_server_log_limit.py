"""The server's per-connection log limiter: a flood is bounded, and its size is never lost."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from tstorage_server import connection
from tstorage_server.logs import LogLimiter


def test_the_first_event_after_the_window_carries_the_count() -> None:
    limiter = LogLimiter(burst=2, period=10.0)
    assert [limiter.allow("e", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert limiter.pending("e") == (3, 10.0)
    assert limiter.allow("e", 10.0) == 3
    assert limiter.take("e") == 0  # already reported with that event


async def test_a_flood_that_simply_ends_is_summarised_when_its_window_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "_limiter", LogLimiter(burst=3, period=0.05))
    with capture_logs() as logs:
        for index in range(50):
            connection.log_limited("info", "connection_open", peer=f"p{index}")
        deadline = asyncio.get_running_loop().time() + 10
        while not any(e["event"] == "log_events_suppressed" for e in logs):
            assert asyncio.get_running_loop().time() < deadline, logs
            await asyncio.sleep(0.01)
    opened = [e for e in logs if e["event"] == "connection_open"]
    assert len(opened) == 3
    (summary,) = [e for e in logs if e["event"] == "log_events_suppressed"]
    assert summary["suppressed_event"] == "connection_open"
    assert summary["suppressed"] == 47
    assert summary["period_s"] == 0.05
