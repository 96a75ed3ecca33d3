"""Moving-window rates for the status view (records/s over the last seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MovingRate"]


class MovingRate:
    """Counts events in one-second buckets and reports the rate over the last ``window`` s.

    ``add`` is O(1) in the common case (same second as the previous call), so it is cheap
    enough for the pipeline's per-batch calls. The clock is injectable for tests.
    """

    __slots__ = ("_buckets", "_clock", "_last_second", "_started", "window")

    def __init__(self, window: int = 10, *, clock: Callable[[], float] = time.monotonic):
        if window < 1:
            raise ValueError("window must be at least one second")
        self.window = window
        self._clock = clock
        self._buckets = [0] * window
        self._started = clock()
        self._last_second = int(self._started)

    def _advance(self, second: int) -> None:
        """Zero the buckets of the seconds that passed without events."""
        gap = second - self._last_second
        if gap <= 0:
            return
        buckets = self._buckets
        if gap >= self.window:
            buckets[:] = [0] * self.window
        else:
            for s in range(self._last_second + 1, second + 1):
                buckets[s % self.window] = 0
        self._last_second = second

    def add(self, count: int) -> None:
        """Record ``count`` events now."""
        second = int(self._clock())
        if second != self._last_second:
            self._advance(second)
        self._buckets[second % self.window] += count

    def rate(self) -> float:
        """Events per second over the last ``window`` seconds (or since creation, if shorter).

        The current, still filling second is included, and the span counts it as a whole
        second, so a steady stream reads slightly low rather than jumping around.
        """
        now = self._clock()
        self._advance(int(now))
        span = min(float(self.window), max(1.0, int(now) - int(self._started) + 1.0))
        return sum(self._buckets) / span
