"""``Channel``: the TStorage client over blocking sockets.

The requests and the I/O pump are ``tstorage_client._channel_core_sync`` (generated from the
asyncio original, so both channels behave alike); this module adds the constructor.
"""

from __future__ import annotations

import ssl
from typing import TypeVar

from tstorage_client._channel_core_sync import _ChannelCore
from tstorage_client.payload_type import PayloadType
from tstorage_client.protocol.client import DEFAULT_MAX_BATCH_SIZE

__all__ = ["Channel"]

T = TypeVar("T")


class Channel(_ChannelCore[T]):
    """A connection to TStorage over a blocking socket.

    ``Channel(host, port, payload_type, timeout=None, memory_limit=None, ssl_context=None)``
    as in the reference client (``None``: no limit); ``max_batch_size`` (bytes per per-cid
    batch of a put, default 1 MiB), ``connect_timeout`` and ``server_hostname`` are
    keyword-only extras. Use ``connect()`` / ``close()`` or ``with Channel(...) as channel:``
    (which raises the connection error). ``timeout`` and ``memory_limit`` may be set at any
    time; a new ``timeout`` applies to the open connection at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        payload_type: PayloadType[T],
        timeout: float | None = None,
        memory_limit: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        connect_timeout: float | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._configure(
            host,
            port,
            payload_type,
            timeout,
            memory_limit,
            ssl_context,
            max_batch_size,
            connect_timeout,
            server_hostname,
        )
        self._init_io()
