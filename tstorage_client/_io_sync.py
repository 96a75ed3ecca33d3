"""The blocking side of the channels' I/O: a transport over a socket, and helpers.

The twin of ``_io_async`` with the same names; ``_channel_core_sync`` (generated from
``_channel_core_async``) uses these.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tstorage_client._channel_base import tcp_port

__all__ = ["RequestLock", "Transport", "deliver", "open_transport"]


class RequestLock:
    """A blocking channel serves one caller; its request lock does nothing (and costs nothing)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class Transport:
    """A connected socket; its timeout bounds each read and each write.

    ``read``, ``read_into`` and ``write`` are the socket's own ``recv``, ``recv_into`` and
    ``sendall`` (no extra call).
    """

    __slots__ = ("_sock", "read", "read_into", "write")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.read: Callable[[int], bytes] = sock.recv
        self.read_into: Callable[[memoryview], int] = sock.recv_into
        self.write: Callable[[bytes | bytearray | memoryview], None] = sock.sendall

    def set_timeout(self, timeout: float | None) -> None:
        """Change the bound of the next reads and writes at once."""
        self._sock.settimeout(timeout)

    def close(self) -> None:
        """Close the connection at once."""
        self._sock.close()


def open_transport(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str,
    connect_timeout: float | None,
    io_timeout: float | None,
) -> Transport:
    """Connect (TCP, then TLS with ``ssl_context``); raises OSError (timeouts too).

    ``io_timeout`` then bounds each read and write of the transport.
    """
    sock = socket.create_connection((host, tcp_port(port)), timeout=connect_timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname)
        sock.settimeout(io_timeout)  # from now on each read and write
    except BaseException:
        sock.close()
        raise
    return Transport(sock)


def deliver(callback: Callable[[Any], object], batch: Any) -> None:
    """Hand a get_stream batch to the callback."""
    callback(batch)
