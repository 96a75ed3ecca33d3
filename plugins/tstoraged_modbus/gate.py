"""The send gate: every request due at one instant leaves at that instant, together.

Without it, the devices polled at the same tick start one after the other *after* the tick:
each poll task is woken, builds its request through pymodbus and writes it, so the 50th
device's request left ~10 ms after the first (benchmarks/RESULTS.md, issue 12). With it, the
polls are woken ahead of the tick (the schedule's ``lead``), build their first request, and
hand the finished frame to the gate instead of writing it. One timer per instant then writes
all held frames in one tight loop: a tick costs only the ``write`` calls.

The timer is armed ``spin`` seconds early and the last stretch is waited for by reading the
clock, because the event loop's timers wake up to a millisecond late (``epoll`` counts in
milliseconds). Requests that must take turns on a shared connection cannot all be written at
once; their tasks wait for the instant (:meth:`SendGate.wait`) and are released in the order
given, so the device ranked first on the connection takes the line first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Held", "SendGate"]

SPIN = 0.001
"""Seconds of clock-reading before an instant (bounded by a hundredth of the interval)."""


class Held:
    """A frame waiting in the gate for its instant."""

    __slots__ = ("cancelled", "write")

    def __init__(self, write: Callable[[], None]) -> None:
        self.write = write
        self.cancelled = False

    def cancel(self) -> None:
        """Do not write it (its request gave up before the instant)."""
        self.cancelled = True


@dataclass
class _Slot:
    at: float
    """The instant (Unix seconds)."""
    deadline: float
    """The instant on the event loop's clock."""
    writes: list[Held] = field(default_factory=list)
    waiters: list[tuple[tuple[int, int], int, asyncio.Future[None]]] = field(default_factory=list)


class SendGate:
    """Holds the requests due at an instant and starts them all exactly then."""

    def __init__(self, spin: float = SPIN) -> None:
        self.spin = spin
        self._slots: dict[float, _Slot] = {}
        self.instants = 0
        """Instants served so far."""
        self.written = 0
        """Frames written at their instant so far."""

    def hold(
        self, at: float, write: Callable[[], None], *, spin: float | None = None
    ) -> Held | None:
        """Call ``write()`` at ``at`` (Unix seconds) with the other writes due then.

        Returns ``None`` when the instant has come already: the caller writes at once.
        """
        slot = self._slot(at, spin)
        if slot is None:
            return None
        held = Held(write)
        slot.writes.append(held)
        return held

    async def wait(self, at: float, order: tuple[int, int] = (0, 0)) -> bool:
        """Return at ``at``; waiters go in ``order``, then arrival.

        False (at once, without waiting) when the instant has come already.
        """
        slot = self._slot(at, None)
        if slot is None:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.waiters.append((order, len(slot.waiters), waiter))
        await waiter
        return True

    def _slot(self, at: float, spin: float | None) -> _Slot | None:
        slot = self._slots.get(at)
        if slot is not None:
            return slot
        ahead = at - time.time()
        if ahead <= 0:
            return None
        loop = asyncio.get_running_loop()
        slot = self._slots[at] = _Slot(at, loop.time() + ahead)
        early = min(self.spin if spin is None else spin, ahead)
        loop.call_at(slot.deadline - early, self._fire, slot, early)
        return slot

    def _fire(self, slot: _Slot, spin: float) -> None:
        del self._slots[slot.at]
        self.instants += 1
        clock = asyncio.get_running_loop().time
        end = min(slot.deadline, clock() + spin)
        while clock() < end:
            pass  # the last fraction of a millisecond: the loop's timers are not that precise
        for held in slot.writes:
            if not held.cancelled:
                held.write()
                self.written += 1
        for _, _, waiter in sorted(slot.waiters, key=lambda entry: entry[:2]):
            if not waiter.done():
                waiter.set_result(None)
