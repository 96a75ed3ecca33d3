"""Settings of one server instance (what the command line and ``testing.serve`` configure)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

__all__ = ["ServerOptions"]


@dataclass(frozen=True)
class ServerOptions:
    """How a :class:`~tstorage_server.server.TStorageServer` listens and stores.

    ``data_dir=None`` keeps records in memory only.
    """

    host: str = "127.0.0.1"
    port: int = 2025
    data_dir: str | None = None
    ssl_context: ssl.SSLContext | None = None
    idle_timeout: float = 300.0
    """Seconds a connection may stay silent (between or inside requests) before it is closed."""
    max_connections: int = 1024
    """Connections beyond this get an error header and are closed at once on accept."""
    frame_timeout: float = 10.0
    """Seconds a request (its header and record frames) may take to arrive once its first byte
    came, plus the time ``min_rate`` allows for its bytes: a trickling client cannot hold a
    connection slot."""
    min_rate: int = 4096
    """Bytes per second a client must sustain, on average, inside a request."""
    synchronous: Literal["normal", "full"] = "normal"
    """SQLite durability: "normal" survives process kill, "full" also power loss."""
    shutdown_timeout: float = 10.0
    """Seconds a stopping server lets requests in flight finish before cancelling them."""
