"""Repeated identical warnings/errors are let through once per window, then counted.

The end-to-end behaviour (real JSON output) is in test_logging_setup.py."""

from __future__ import annotations

import pytest
import structlog

from tstoraged.observe.ratelimit import RateLimiter, RateLimitProcessor


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_limiter_admits_the_first_suppresses_repeats_and_reports_the_count(
    clock: FakeClock,
) -> None:
    limiter = RateLimiter(60, clock=clock)
    assert limiter.admit("k") == 0
    clock.now += 10
    assert limiter.admit("k") is None
    clock.now += 49
    assert limiter.admit("k") is None
    clock.now += 1  # the window is over
    assert limiter.admit("k") == 2
    assert limiter.admit("k") is None  # a new window started


def test_limiter_keeps_keys_apart(clock: FakeClock) -> None:
    limiter = RateLimiter(60, clock=clock)
    assert limiter.admit("a") == 0
    assert limiter.admit("b") == 0
    assert limiter.admit("a") is None


def test_limiter_memory_is_bounded_by_max_keys(clock: FakeClock) -> None:
    limiter = RateLimiter(60, clock=clock, max_keys=10)
    for i in range(100):
        limiter.admit(i)
    assert len(limiter._seen) <= 10


def run(processor: RateLimitProcessor, method: str, **fields: object) -> dict[str, object] | None:
    try:
        return dict(processor(None, method, {"event": "poll failed", **fields}))
    except structlog.DropEvent:
        return None


def test_processor_drops_repeats_of_the_same_error_of_the_same_source(clock: FakeClock) -> None:
    processor = RateLimitProcessor(RateLimiter(30, clock=clock))
    assert run(processor, "error", source="meter-1", reason="timeout") is not None
    for attempt in range(5):  # fields outside the key (attempt) do not make lines distinct
        assert run(processor, "error", source="meter-1", reason="timeout", attempt=attempt) is None
    assert run(processor, "error", source="meter-2", reason="timeout") is not None
    assert run(processor, "error", source="meter-1", reason="crc") is not None

    clock.now += 30
    later = run(processor, "error", source="meter-1", reason="timeout")
    assert later is not None
    assert later["suppressed"] == 5


def test_processor_never_limits_info_lines(clock: FakeClock) -> None:
    processor = RateLimitProcessor(RateLimiter(30, clock=clock))
    for _ in range(3):
        assert run(processor, "info", source="s") is not None


def test_processor_never_limits_an_event_marked_rate_limit_false(clock: FakeClock) -> None:
    processor = RateLimitProcessor(RateLimiter(30, clock=clock))
    for _ in range(3):
        event = run(processor, "error", source="s", rate_limit=False)
        assert event is not None
        assert "rate_limit" not in event  # the marker is not written
    # Unmarked, the same event is limited as usual.
    assert run(processor, "error", source="s") is not None
    assert run(processor, "error", source="s") is None
