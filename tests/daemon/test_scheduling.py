"""IntervalSchedule: ticks on wall-clock boundaries, no drift, late ticks skipped and counted.

The schedule runs on a fake clock whose ``sleep`` advances time, so every instant is exact.
"""

from __future__ import annotations

import asyncio

import pytest

from tstoraged.scheduling import IntervalSchedule, Tick


class FakeClock:
    """Wall-clock seconds that move only when the schedule sleeps or the test says so."""

    def __init__(self, start: float, oversleep: float = 0.0) -> None:
        self.now = start
        self.oversleep = oversleep
        """Every sleep wakes this much too late (a busy event loop)."""

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds + self.oversleep

    def schedule(self, interval: float, **kwargs: float) -> IntervalSchedule:
        return IntervalSchedule(interval, clock=self, sleep=self.sleep, **kwargs)


async def test_ticks_fall_on_multiples_of_the_interval() -> None:
    clock = FakeClock(1_000_003.7)
    schedule = clock.schedule(10)
    ticks = [await schedule.next() for _ in range(3)]
    assert [tick.at for tick in ticks] == [1_000_010.0, 1_000_020.0, 1_000_030.0]
    assert all(tick.skipped == 0 for tick in ticks)
    assert ticks[0].at_ns == 1_000_010_000_000_000


async def test_offset_shifts_the_boundaries() -> None:
    clock = FakeClock(3600.0)
    schedule = clock.schedule(60, offset=5)
    assert (await schedule.next()).at == 3605.0
    assert (await schedule.next()).at == 3665.0


async def test_no_drift_when_every_wake_up_is_late_and_polls_take_time() -> None:
    clock = FakeClock(0.0, oversleep=0.003)
    schedule = clock.schedule(0.5)
    ticks = []
    for _ in range(20_000):  # about 2.8 hours of half-second polls
        tick = await schedule.next()
        ticks.append(tick)
        clock.now += 0.2  # the poll itself
    assert ticks[-1].at == pytest.approx(20_000 * 0.5)
    assert [round(tick.at / 0.5) for tick in ticks] == list(range(1, 20_001))
    assert schedule.skipped_total == 0
    assert max(tick.started - tick.at for tick in ticks) == pytest.approx(0.003)


async def test_lead_wakes_the_consumer_before_the_tick_it_returns() -> None:
    clock = FakeClock(1_000_003.7)
    schedule = clock.schedule(10, lead=0.05)
    ticks = []
    for _ in range(3):
        tick = await schedule.next()
        ticks.append(tick)
        assert clock.now == pytest.approx(tick.at - 0.05)  # woken 50 ms ahead
        clock.now += 0.2  # the poll: waits for its instant, then runs
    assert [tick.at for tick in ticks] == [1_000_010.0, 1_000_020.0, 1_000_030.0]
    assert [tick.started - tick.at for tick in ticks] == pytest.approx([-0.05] * 3)
    assert schedule.skipped_total == 0


async def test_a_consumer_done_within_the_lead_gets_the_next_tick_not_the_same_again() -> None:
    clock = FakeClock(0.0)
    schedule = clock.schedule(0.05, lead=0.005)
    ticks = [(await schedule.next()).at for _ in range(4)]  # nothing done between ticks
    assert ticks == pytest.approx([0.05, 0.10, 0.15, 0.20])
    assert (schedule.ticks_total, schedule.skipped_total) == (4, 0)


async def test_lead_does_not_skip_a_tick_whose_lead_was_overrun() -> None:
    clock = FakeClock(0.0)
    schedule = clock.schedule(1, lead=0.1)
    assert (await schedule.next()).at == 1.0
    clock.now = 1.95  # the poll ran into the next tick's lead
    tick = await schedule.next()
    assert (tick.at, tick.skipped, tick.started) == (2.0, 0, 1.95)


@pytest.mark.parametrize("lead", [-0.1, 1.0, 2.0])
def test_lead_must_be_shorter_than_the_interval(lead: float) -> None:
    with pytest.raises(ValueError, match="lead must be at least 0 and less than the interval"):
        IntervalSchedule(1.0, lead=lead)


async def test_a_slow_poll_skips_the_ticks_it_overran_instead_of_queueing_them() -> None:
    clock = FakeClock(100.0)
    schedule = clock.schedule(10)
    first = await schedule.next()
    assert first.at == 110.0
    clock.now += 25.0  # the poll took 25 s: the ticks at 120 and 130 cannot start on time
    second = await schedule.next()
    assert (second.at, second.skipped) == (140.0, 2)
    third = await schedule.next()
    assert (third.at, third.skipped) == (150.0, 0)
    assert (schedule.ticks_total, schedule.skipped_total) == (3, 2)


async def test_a_tick_found_slightly_late_still_starts() -> None:
    clock = FakeClock(0.0)
    schedule = clock.schedule(10)  # may start up to 1 s late
    await schedule.next()
    clock.now += 10.4  # the poll overran the next boundary by 0.4 s
    tick = await schedule.next()
    assert (tick.at, tick.skipped) == (20.0, 0)
    assert tick.started - tick.at == pytest.approx(0.4)


async def test_max_lateness_zero_skips_any_late_tick() -> None:
    clock = FakeClock(0.0)
    schedule = clock.schedule(1, max_lateness=0)
    await schedule.next()
    clock.now += 1.01
    tick = await schedule.next()
    assert (tick.at, tick.skipped) == (3.0, 1)


async def test_a_wall_clock_step_backwards_realigns_to_the_new_boundaries() -> None:
    clock = FakeClock(1000.0)
    schedule = clock.schedule(10)
    assert (await schedule.next()).at == 1010.0
    clock.now = 500.0  # NTP stepped the clock back
    tick = await schedule.next()
    assert (tick.at, tick.skipped) == (510.0, 0)


async def test_async_iteration_yields_ticks_until_cancelled() -> None:
    clock = FakeClock(0.0)
    seen: list[Tick] = []

    async def consume() -> None:
        async for tick in clock.schedule(2):
            seen.append(tick)
            if len(seen) == 3:
                raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await consume()
    assert [tick.at for tick in seen] == [2.0, 4.0, 6.0]


async def test_real_clock_ticks_are_on_the_boundary() -> None:
    schedule = IntervalSchedule(0.05)
    tick = await schedule.next()
    assert round(tick.at / 0.05) * 0.05 == pytest.approx(tick.at)
    assert tick.started >= tick.at


@pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan")])
def test_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        IntervalSchedule(interval)


async def test_at_ns_is_the_exact_boundary_for_sub_second_intervals() -> None:
    # A float holds today's Unix time to ~0.2 us: at * 1e9 alone would be off by ~100 ns.
    clock = FakeClock(1_764_612_000.123)
    schedule = clock.schedule(0.01)
    ticks = [await schedule.next() for _ in range(100)]
    assert all(tick.at_ns % 10_000_000 == 0 for tick in ticks)
    assert ticks[1].at_ns - ticks[0].at_ns == 10_000_000
