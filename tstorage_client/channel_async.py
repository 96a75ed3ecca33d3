"""``AsyncChannel``: the TStorage client over an asyncio protocol (``_io_async``).

The requests and the I/O pump are ``tstorage_client._channel_core_async`` (the original from
which the blocking channel's are generated); this module adds the constructor. Requests on
one channel run one at a time (an ``asyncio.Lock``), so tasks may share a channel.
``get_stream`` accepts a plain or a coroutine callback; ``get_iter`` is an async generator.
"""

from __future__ import annotations

import ssl
from typing import TypeVar

from tstorage_client._channel_core_async import _AsyncChannelCore
from tstorage_client.payload_type import PayloadType
from tstorage_client.protocol.client import DEFAULT_MAX_BATCH_SIZE

__all__ = ["AsyncChannel"]

T = TypeVar("T")


class AsyncChannel(_AsyncChannelCore[T]):
    """A connection to TStorage for asyncio.

    ``AsyncChannel(host, port, payload_type, memory_limit=None, ssl_context=None)`` as in the
    reference client, which has no timeout (it sends users to ``asyncio.timeout``); here
    ``timeout`` (seconds per read or write, None: no limit), ``max_batch_size``,
    ``connect_timeout`` and ``server_hostname`` are keyword-only extras. Use
    ``await connect()`` / ``await close()`` or ``async with AsyncChannel(...) as channel:``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        payload_type: PayloadType[T],
        memory_limit: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        timeout: float | None = None,
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
