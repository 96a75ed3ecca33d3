"""The acquisition clock: monotonic acq assignment and the "acq0" stability bound."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from tstorage_client.timestamp import now_ns

__all__ = ["AcqClock"]


class AcqClock:
    """Hands out acqs for PUT and answers GET_ACQ.

    Acqs are TStorage nanoseconds from the wall clock, strictly increasing, and never below
    anything handed out before: neither an assigned acq (``last_assigned`` is persisted by the
    storage and passed in on restart) nor an acq0 a reader was told (``_floor``), even if the
    wall clock steps back.

    A PUT in flight *holds* its first acq from assignment until its commit is visible; acq0 is
    then the smallest held acq, so a reader is never told "stable up to X" while a record below
    X can still appear.
    """

    def __init__(self, last_assigned: int = -1, clock: Callable[[], int] = now_ns) -> None:
        self._clock = clock
        self._last = last_assigned
        self._floor = last_assigned + 1
        self._held: Counter[int] = Counter()

    @property
    def last_assigned(self) -> int:
        """The largest acq handed out to a PUT so far (what the storage persists)."""
        return self._last

    def next_acq(self) -> int:
        """The smallest acq the next PUT could get: the server's "current acq"."""
        return max(self._clock(), self._last + 1, self._floor)

    def assign(self, count: int) -> int:
        """Reserve ``count`` consecutive acqs and return the first."""
        base = self.next_acq()
        self._last = base + count - 1
        return base

    def hold(self, acq: int) -> None:
        """Mark ``acq`` as assigned but not yet visible (its PUT is committing)."""
        self._held[acq] += 1

    def release(self, acq: int) -> None:
        """The PUT holding ``acq`` is committed (or rolled back)."""
        self._held[acq] -= 1
        if self._held[acq] <= 0:
            del self._held[acq]

    def stable(self) -> int:
        """acq0: every record with a smaller acq is visible and none can appear later."""
        if self._held:
            return min(self._held)
        acq0 = self.next_acq()
        # A later PUT must not get an acq below what a reader was just promised.
        self._floor = acq0
        return acq0
