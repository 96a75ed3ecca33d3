"""A broadcast wake-up for asyncio waiters ("something changed, look again")."""

from __future__ import annotations

import asyncio


class Wakeup:
    """Waiters block in :meth:`wait` until the next :meth:`fire` (or their timeout).

    Unlike :class:`asyncio.Event` there is nothing to clear, so a fire can never be lost
    between a waiter's check and its wait: the waiter re-checks its condition after waking.
    """

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def fire(self) -> None:
        """Wake every current waiter."""
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        self._future = None

    async def wait(self, max_wait: float | None = None) -> bool:
        """Wait for the next fire; False if ``max_wait`` seconds passed first."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._future), max_wait)
        except TimeoutError:
            return False
        return True
