"""Where the writer's records go: a :class:`Sink` is one connection to one TStorage target.

:class:`ChannelSink` is the real one, a long-lived ``AsyncChannel`` that reconnects lazily on
the next write after :meth:`Sink.reset`. The protocol keeps the writer's retry and
classification logic independent of the network, and lets tests put a peer in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Record
from tstorage_client.response import ResponseStatus
from tstoraged.pipeline.settings import TargetSettings, WriteMode

if TYPE_CHECKING:
    from tstorage_client.channel_async import AsyncChannel

__all__ = ["ChannelSink", "Sink"]


class Sink(Protocol):
    """A connection to a TStorage target that writes whole batches."""

    target: str
    """``host:port``, for logs and the observer."""

    async def write(
        self, records: Sequence[Record[bytes]], write_mode: WriteMode
    ) -> ResponseStatus:
        """Write the records with put or puta; returns the status.

        Connection failures may also surface as ``OSError`` / ``TimeoutError``.
        """

    async def reset(self) -> None:
        """Drop the connection; the next write connects anew."""

    async def close(self) -> None:
        """Release the connection for good."""


class ChannelSink:
    """A :class:`Sink` over ``tstorage_client.channel_async.AsyncChannel``."""

    def __init__(self, settings: TargetSettings) -> None:
        self.settings = settings
        self.target = settings.address
        self._channel: AsyncChannel[bytes] | None = None

    async def _connected(self) -> AsyncChannel[bytes]:
        if self._channel is None:
            # Imported here so the pipeline's pure parts load without the network client.
            from tstorage_client.channel_async import AsyncChannel

            settings = self.settings
            channel: AsyncChannel[bytes] = AsyncChannel(
                settings.host,
                settings.port,
                BytesPayloadType(),
                timeout=settings.timeout,
                ssl_context=settings.ssl_context,
            )
            result = await channel.connect()
            # connect() may report failure as a falsy response instead of raising.
            if result is not None and not result:
                await channel.close()
                raise ConnectionError(f"cannot connect to {self.target}: {result}")
            self._channel = channel
        return self._channel

    async def write(
        self, records: Sequence[Record[bytes]], write_mode: WriteMode
    ) -> ResponseStatus:
        """Connect if needed, then put or puta."""
        channel = await self._connected()
        if write_mode == "puta":
            response = await channel.puta(records)
        else:
            response = await channel.put(records)
        return ResponseStatus(response.result)

    async def reset(self) -> None:
        """Close the channel; the next write reconnects."""
        channel, self._channel = self._channel, None
        if channel is not None:
            # An already broken connection has nothing more to release.
            with contextlib.suppress(OSError):
                await channel.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.reset()
