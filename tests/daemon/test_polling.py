"""PollingSource: the author writes poll(); the core owns the clock-aligned schedule, skips
and counts slow polls, logs, counts and retries failed polls at the next tick (same instance,
state kept), cancels polls past poll_timeout, and reports a failing poll as the source's
problem. The schedule runs on the fake clock of the scheduling tests: every instant is exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs
from test_scheduling import FakeClock

from tstorage_client.timestamp import to_unix_ns
from tstoraged import PollingConfig, PollingSource, Tick
from tstoraged.testing import RecordingContext


class CounterConfig(PollingConfig):
    """A polling source whose polls are scripted by the test."""


class ScriptedSource(PollingSource):
    """Each poll runs the next step of ``script``: "ok", "fail", "slow:<s>", "hang"."""

    config: CounterConfig

    def __init__(self, config: CounterConfig, context: RecordingContext, script: list[str]):
        super().__init__(config, context)
        self.script = list(script)
        self.ticks: list[Tick] = []
        self.clock: FakeClock | None = None
        self.done = asyncio.Event()
        self.set_up = self.torn_down = 0
        self.state_kept = 0
        """Grows with every poll of this instance: a restart would reset it."""

    async def setup(self) -> None:
        self.set_up += 1

    async def teardown(self) -> None:
        self.torn_down += 1

    async def poll(self, tick: Tick) -> None:
        self.ticks.append(tick)
        self.state_kept += 1
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()  # until cancelled
        step = self.script.pop(0)
        if step == "fail":
            raise ConnectionRefusedError("endpoint refused")
        if step == "hang":
            await asyncio.Event().wait()
        if step.startswith("slow:") and self.clock is not None:
            self.clock.now += float(step.removeprefix("slow:"))
        record = self.context.map({"n": self.state_kept}, origin="test", received_ns=tick.at_ns)
        assert record is not None
        await self.context.emit([record])


def make(
    tmp_path: Path, script: list[str], start: float = 1_000_003.2, **settings: object
) -> tuple[ScriptedSource, RecordingContext, FakeClock]:
    config = CounterConfig.model_validate(
        {
            "type": "scripted",
            "name": "poller",
            "key": {"cid": 1, "mid": 2, "moid": 3},
            "payload": {"codec": "json", "fields": ["n"]},
            **settings,
        }
    )
    context = RecordingContext(config, tmp_path)
    source = ScriptedSource(config, context, script)
    clock = FakeClock(start)
    source.clock = clock
    source.schedule = clock.schedule(config.interval, offset=config.offset)
    return source, context, clock


async def run_until_script_done(source: ScriptedSource) -> None:
    task = asyncio.create_task(source.run())
    done = asyncio.create_task(source.done.wait())
    finished, _ = await asyncio.wait({task, done}, timeout=30, return_when="FIRST_COMPLETED")
    assert done in finished, "run() ended before its script" if task in finished else "timeout"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_polls_fall_on_clock_boundaries_and_records_carry_the_tick_time(
    tmp_path: Path,
) -> None:
    source, context, _ = make(tmp_path, ["ok", "ok", "ok"], interval="10s")
    await run_until_script_done(source)
    assert [tick.at for tick in source.ticks[:3]] == [1_000_010.0, 1_000_020.0, 1_000_030.0]
    assert [to_unix_ns(record.key.cap) for record in context.records] == [
        tick.at_ns for tick in source.ticks[:3]
    ]
    assert context.metric_value("polls_total") == 3
    assert (source.set_up, source.torn_down) == (1, 1)  # teardown ran on cancellation


async def test_the_offset_shifts_the_poll_instants(tmp_path: Path) -> None:
    source, _, _ = make(tmp_path, ["ok"], start=3600.0, interval="1m", offset="5s")
    await run_until_script_done(source)
    assert [tick.at for tick in source.ticks] == [3605.0, 3665.0]


async def test_a_slow_poll_skips_the_ticks_it_overran_and_counts_them(tmp_path: Path) -> None:
    source, context, _ = make(tmp_path, ["ok", "slow:25", "ok"], interval="10s")
    await run_until_script_done(source)
    # Poll at :20 took 25 s: :30 and :40 could not start on time; the next is :50, not a burst.
    assert [tick.at for tick in source.ticks] == [
        1_000_010.0,
        1_000_020.0,
        1_000_050.0,
        1_000_060.0,
    ]
    assert source.ticks[2].skipped == 2
    assert context.metric_value("polls_skipped_total") == 2
    assert context.metric_value("polls_total") == 3


async def test_a_failed_poll_is_counted_reported_and_retried_at_the_next_tick(
    tmp_path: Path,
) -> None:
    source, context, _ = make(tmp_path, ["ok", "fail", "fail"], interval="10s")
    problems: list[str | None] = []
    set_problem = context.set_problem
    context.set_problem = lambda problem: (problems.append(problem), set_problem(problem))  # type: ignore[method-assign]
    source.script.append("ok")
    with capture_logs() as logs:
        await run_until_script_done(source)
    events = [(e["event"], e.get("failures")) for e in logs if e["event"].startswith("poll_")]
    assert events == [("poll_failed", 1), ("poll_failed", 2), ("poll_recovered", 2)]
    assert [tick.at for tick in source.ticks] == [
        1_000_010.0,
        1_000_020.0,
        1_000_030.0,
        1_000_040.0,
        1_000_050.0,
    ]
    assert context.metric_value("poll_failures_total") == 2
    assert context.metric_value("polls_total") == 2
    assert problems == [
        "poll failed: ConnectionRefusedError: endpoint refused",
        "poll failed: ConnectionRefusedError: endpoint refused",
        None,
    ]
    assert context.problem is None
    assert source.consecutive_failures == 0
    # The same instance went on: its state survived both failures, setup ran once.
    assert source.state_kept == 5
    assert source.set_up == 1
    assert len(context.records) == 2


async def test_a_poll_past_poll_timeout_is_cancelled_and_counted_as_failed(
    tmp_path: Path,
) -> None:
    source, context, _ = make(tmp_path, ["hang", "ok"], interval="10s", poll_timeout="50ms")
    await run_until_script_done(source)
    assert context.metric_value("poll_failures_total") == 1
    assert context.metric_value("polls_total") == 1
    assert context.problem is None  # recovered by the second poll
    assert len(source.ticks) == 3


async def test_a_failing_setup_fails_the_source(tmp_path: Path) -> None:
    source, _, _ = make(tmp_path, [])

    async def broken() -> None:
        raise OSError("no such device: /dev/ttyUSB0")

    source.setup = broken  # type: ignore[method-assign]
    with pytest.raises(OSError, match="ttyUSB0"):
        await source.run()


def test_polling_settings_are_validated() -> None:
    with pytest.raises(ValidationError) as info:
        CounterConfig.model_validate(
            {
                "type": "scripted",
                "name": "p",
                "key": {"cid": 1, "mid": 2, "moid": 3},
                "payload": {"codec": "json", "fields": ["n"]},
                "interval": "0s",
                "poll_timeout": "-1s",
            }
        )
    assert {error["loc"][0] for error in info.value.errors()} == {"interval", "poll_timeout"}
