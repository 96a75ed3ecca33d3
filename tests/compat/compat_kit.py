"""Helpers of the compatibility suite: run a channel call the same way for both channels.

``call`` runs a channel method directly for the blocking channel and awaits it for the
asyncio one. (A module of its own name: ``from conftest import`` would get whichever
directory's conftest pytest imported last.)
"""

from __future__ import annotations

import inspect
from typing import Any

from tstorage_server.testing import RunningServer


async def call(result: Any) -> Any:
    """The outcome of a channel call, awaited when it is a coroutine."""
    return await result if inspect.isawaitable(result) else result


async def items_of(iterator: Any) -> list[Any]:
    """Every item a get_iter yields (a generator or an async generator)."""
    if inspect.isasyncgen(iterator):
        return [item async for item in iterator]
    return list(iterator)


async def connected(
    channel_class: type[Any], server: RunningServer, payload_type: Any, **options: Any
) -> Any:
    """A channel of ``channel_class`` to ``server``, connected."""
    channel = channel_class(server.host, server.port, payload_type, **options)
    assert await call(channel.connect())
    return channel
