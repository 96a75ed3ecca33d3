"""Fixtures of the compatibility suite: the project's server, and both channels alike.

The suite is written from the reference client's API description (kept outside the
repository; this suite is our own reading of it): every signature, default, truthiness rule
and behaviour that user code of the reference client can touch, for ``Channel`` and
``AsyncChannel``. ``call`` runs a channel method the same way for both: directly for the
blocking channel, awaited for the asyncio one.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from tstorage_client.channel import Channel
from tstorage_client.channel_async import AsyncChannel
from tstorage_server.testing import RunningServer, serve


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A fresh memory server for each test."""
    with serve(memory=True) as running:
        yield running


@pytest.fixture(params=["Channel", "AsyncChannel"])
def channel_class(request: pytest.FixtureRequest) -> type[Any]:
    """The channel a test runs against."""
    return Channel if request.param == "Channel" else AsyncChannel


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
