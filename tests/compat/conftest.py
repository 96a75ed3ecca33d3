"""Fixtures of the compatibility suite: the project's server, and both channels alike.

The suite is written from the reference client's API description (kept outside the
repository; this suite is our own reading of it): every signature, default, truthiness rule
and behaviour that user code of the reference client can touch, for ``Channel`` and
``AsyncChannel``. The helpers that run a call the same way on both are in ``compat_kit``.
"""

from __future__ import annotations

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
