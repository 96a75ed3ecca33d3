"""The send gate: frames held for an instant are written at it, together; waiters go in order.

Real event loop, real clock: the assertions are about order and about never being early, not
about how close to the instant anything happened (that is the benchmark's job).
"""

from __future__ import annotations

import asyncio
import functools
import time

from tstoraged_modbus.gate import SendGate

AHEAD = 0.05


async def test_held_writes_run_together_at_the_instant_never_before() -> None:
    gate = SendGate()
    at = time.time() + AHEAD
    written: list[tuple[str, float]] = []
    loop_steps: list[str] = []

    def write(name: str) -> None:
        written.append((name, time.time()))

    for name in ("a", "b", "c"):
        assert gate.hold(at, functools.partial(write, name)) is not None

    async def other_work() -> None:
        while len(written) < 3:
            loop_steps.append(f"step after {len(written)} writes")
            await asyncio.sleep(0)

    await asyncio.wait_for(other_work(), AHEAD * 20)
    assert [name for name, _ in written] == ["a", "b", "c"]  # in the order they were held
    assert all(when >= at for _, when in written)
    # One callback wrote them all: no loop step saw some of the writes done but not others.
    assert all(step in ("step after 0 writes", "step after 3 writes") for step in loop_steps)
    assert gate.instants == 1


async def test_a_cancelled_write_is_not_made() -> None:
    gate = SendGate()
    at = time.time() + AHEAD
    written: list[str] = []
    kept = gate.hold(at, lambda: written.append("kept"))
    dropped = gate.hold(at, lambda: written.append("dropped"))
    assert kept is not None
    assert dropped is not None
    dropped.cancel()
    await gate.wait(at)  # returns after the instant's writes
    assert written == ["kept"]


async def test_an_instant_that_has_come_is_not_held() -> None:
    gate = SendGate()
    assert gate.hold(time.time() - 0.001, lambda: None) is None
    assert await asyncio.wait_for(gate.wait(time.time() - 0.001), 1.0) is False  # at once
    assert gate.instants == 0


async def test_waiters_are_released_in_their_order_not_their_arrival() -> None:
    gate = SendGate()
    at = time.time() + AHEAD
    released: list[str] = []

    async def wait(name: str, order: tuple[int, int]) -> None:
        assert await gate.wait(at, order) is True
        released.append(name)

    # Arrival: the silent device's probe first, then the ranks out of order.
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(wait("probe", (1, 0)))
        tasks.create_task(wait("rank 2", (0, 2)))
        tasks.create_task(wait("rank 0", (0, 0)))
        tasks.create_task(wait("rank 1", (0, 1)))
    assert released == ["rank 0", "rank 1", "rank 2", "probe"]


async def test_writes_go_before_the_waiters_of_the_same_instant() -> None:
    gate = SendGate()
    at = time.time() + AHEAD
    events: list[str] = []

    async def waiter() -> None:
        await gate.wait(at)
        events.append("waiter")

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    gate.hold(at, lambda: events.append("write"))
    await task
    assert events == ["write", "waiter"]
