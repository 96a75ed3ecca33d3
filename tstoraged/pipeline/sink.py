"""Where the writer's records go: a :class:`Sink` is one connection to one TStorage target.

:class:`ChannelSink` is the real one, a long-lived ``AsyncChannel`` that reconnects lazily on
the next write after :meth:`Sink.reset`. The protocol keeps the writer's retry and
classification logic independent of the network, and lets tests put a peer in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Record
from tstorage_client.response import ResponseStatus
from tstoraged.pipeline.settings import TargetSettings, WriteMode

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

    async def write_encoded(self, request: bytes) -> ResponseStatus:
        """Send a PUT/PUTA request encoded earlier (a spooled batch); returns the status."""

    async def reset(self) -> None:
        """Drop the connection; the next write connects anew."""

    async def close(self) -> None:
        """Release the connection for good."""


class ChannelSink:
    """A :class:`Sink` over one long-lived ``AsyncChannel``; connects on the first write."""

    def __init__(self, settings: TargetSettings) -> None:
        self.settings = settings
        self.target = settings.address
        self._channel: AsyncChannel[bytes] = AsyncChannel(
            settings.host,
            settings.port,
            BytesPayloadType(),
            timeout=settings.timeout,
            ssl_context=settings.ssl_context,
            connect_timeout=settings.connect_timeout,
            server_hostname=settings.server_hostname,
        )

    async def write(
        self, records: Sequence[Record[bytes]], write_mode: WriteMode
    ) -> ResponseStatus:
        """Connect if needed, then put or puta. A failed connect is DISCONNECTED."""
        if not await self._connected():
            return ResponseStatus.DISCONNECTED
        channel = self._channel
        if write_mode == "puta":
            response = await channel.puta(records)
        else:
            response = await channel.put(records)
        return response.status

    async def write_encoded(self, request: bytes) -> ResponseStatus:
        """Connect if needed, then send the encoded request as it is."""
        if not await self._connected():
            return ResponseStatus.DISCONNECTED
        response = await self._channel.put_encoded(request)
        return response.status

    async def _connected(self) -> bool:
        channel = self._channel
        return channel.connected or (await channel.connect()).is_ok()

    async def reset(self) -> None:
        """Close the connection; the next write reconnects."""
        await self._channel.close()

    async def close(self) -> None:
        """Close the connection."""
        await self._channel.close()
