"""Clock-aligned interval schedules: the core's one scheduler for everything that polls.

An :class:`IntervalSchedule` yields :class:`Tick` s at the wall-clock instants
``k * interval + offset`` (Unix seconds), so a 10 s schedule fires at :00, :10, :20 ... and
never drifts, however long the daemon runs: each tick is computed from the clock, not by
adding the interval to the previous wake-up.

The consumer does its work between ticks (``async for tick in schedule: await poll()``). A tick
that cannot start on time -- the previous poll ran long, or the process was suspended -- is
*skipped and counted*, never queued: after a 25 s stall a 10 s schedule goes on with the next
boundary and reports two skipped ticks, instead of firing three polls back to back.

Sleeping uses the event loop's monotonic clock; the wall clock is read again at every tick, so
a wall-clock step (NTP) moves the schedule to the new boundaries instead of stalling it.

``lead`` wakes the consumer that long *before* each tick: a poll can then get everything
ready (build its requests) and start exactly at :attr:`Tick.at`, instead of starting its
preparation when the instant has already come.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

__all__ = ["IntervalSchedule", "Tick"]


@dataclass(frozen=True, slots=True)
class Tick:
    """One due instant of a schedule."""

    at: float
    """The scheduled instant (Unix seconds): a multiple of the interval, plus the offset."""
    skipped: int
    """Ticks skipped since the previous one because they could not start on time."""
    started: float
    """When the consumer was woken for this tick (Unix seconds); ``started - at`` is the lag
    (negative by about the schedule's ``lead`` when the consumer is woken early on purpose)."""

    @property
    def at_ns(self) -> int:
        """The scheduled instant in Unix nanoseconds, exact to the microsecond.

        A float holds today's Unix time to about 0.2 us, so ``at * 1e9`` is off by a few
        hundred ns for an interval like 10 ms; rounding to whole microseconds gives the exact
        boundary for every interval and offset given in whole microseconds.
        """
        return round(self.at * 1e6) * 1000


class IntervalSchedule:
    """Ticks every ``interval`` seconds, aligned to the wall clock; late ticks are skipped.

    ``offset`` shifts the boundaries (e.g. ``interval=60, offset=5`` fires at hh:mm:05).
    ``max_lateness`` is how late a tick may still start (default: a tenth of the interval,
    at most one second); a tick found later than that is skipped and counted in
    :attr:`skipped_total` and in the next tick's :attr:`Tick.skipped`.

    ``lead`` (seconds, less than the interval) wakes the consumer that long before each tick,
    so that it can prepare and start its work at the instant itself; the tick is the same.

    ``clock`` (Unix seconds) and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        interval: float,
        *,
        offset: float = 0.0,
        max_lateness: float | None = None,
        lead: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.interval = float(interval)
        self.offset = float(offset) % self.interval
        self.max_lateness = (
            min(self.interval / 10, 1.0) if max_lateness is None else max(0.0, max_lateness)
        )
        if not 0.0 <= lead < self.interval:
            raise ValueError(f"lead must be at least 0 and less than the interval, not {lead!r}")
        self.lead = float(lead)
        self._clock = clock
        self._sleep = sleep
        self._last: int | None = None
        """Index of the last tick (its instant is ``index * interval + offset``)."""
        self.ticks_total = 0
        """Ticks handed to the consumer."""
        self.skipped_total = 0
        """Ticks skipped because they could not start on time."""

    def boundary_after(self, moment: float) -> float:
        """The first tick instant strictly after ``moment`` (Unix seconds)."""
        return self._at(self._index_after(moment))

    def _at(self, index: int) -> float:
        # One multiplication from the tick's index: no rounding error accumulates over ticks.
        return index * self.interval + self.offset

    def _index_after(self, moment: float) -> int:
        index = math.floor((moment - self.offset) / self.interval) + 1
        # Floating point: never answer an instant at or before ``moment``.
        return index if self._at(index) > moment else index + 1

    async def next(self) -> Tick:
        """Wait for the next tick that can start on time, and return it."""
        skipped = 0
        now = self._clock()
        if self._last is None:
            index = self._index_after(now)
        else:
            index = self._last + 1
            due = self._at(index)
            if now > due + self.max_lateness:
                # Every boundary up to now is too late: count them and wait for the next one.
                upcoming = self._index_after(now - self.max_lateness)
                skipped = max(0, upcoming - index)
                index = upcoming
            elif due < now - self.interval or due > now + self.interval + self.lead:
                # The wall clock stepped: re-align to its new boundaries. (A consumer woken
                # ``lead`` early and done at once is up to interval + lead before its next tick.)
                index = self._index_after(now)
        due = self._at(index)
        wake = due - self.lead
        while True:
            delay = wake - self._clock()
            if delay <= 0:
                break
            await self._sleep(delay)
        started = self._clock()
        self._last = index
        self.ticks_total += 1
        self.skipped_total += skipped
        return Tick(at=due, skipped=skipped, started=started)

    async def __aiter__(self) -> AsyncIterator[Tick]:
        """``async for tick in schedule``: ticks forever (until the task is cancelled)."""
        while True:
            yield await self.next()
