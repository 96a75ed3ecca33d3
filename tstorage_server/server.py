"""The asyncio TStorage-compatible server: accept connections, bound them, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from tstorage_client.protocol.server import encode_error
from tstorage_server.connection import Connection, log_limited
from tstorage_server.options import ServerOptions
from tstorage_server.storage.base import Storage
from tstorage_server.storage.memory import MemoryStorage
from tstorage_server.storage.sqlite import SqliteStorage

__all__ = ["TStorageServer", "open_storage"]

log = structlog.get_logger("tstorage_server")


async def open_storage(options: ServerOptions) -> Storage:
    """The backend the options ask for: SQLite in ``data_dir``, or memory when it is None."""
    if options.data_dir is None:
        return MemoryStorage()
    return await SqliteStorage.open(options.data_dir, options.synchronous)


class TStorageServer:
    """A running server. Create with :meth:`start`; stop with :meth:`stop`."""

    def __init__(self, options: ServerOptions, storage: Storage) -> None:
        self.options = options
        self.storage = storage
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], Connection] = {}
        self._stopped = asyncio.Event()
        self.host = options.host
        self.port = options.port

    @classmethod
    async def start(cls, options: ServerOptions) -> TStorageServer:
        """Open the storage and start listening; ``.port`` is the bound port (for port 0)."""
        storage = await open_storage(options)
        server = cls(options, storage)
        try:
            server._server = await asyncio.start_server(
                server._accept,
                options.host,
                options.port,
                ssl=options.ssl_context,
                limit=64 * 1024,
            )
        except BaseException:
            await storage.close()
            raise
        sockname = server._server.sockets[0].getsockname()
        server.host, server.port = sockname[0], sockname[1]
        log.info(
            "server_started",
            host=server.host,
            port=server.port,
            storage="memory" if options.data_dir is None else options.data_dir,
            tls=options.ssl_context is not None,
        )
        return server

    @property
    def connection_count(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.options.max_connections:
            log_limited(
                "warning",
                "connection_refused",
                peer=str(writer.get_extra_info("peername")),
                reason=f"max_connections={self.options.max_connections} reached",
            )
            # Politely: an error header, so the client sees a refusal, not a broken connection.
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(encode_error())
            writer.close()
            return
        connection = Connection(
            reader,
            writer,
            self.storage,
            self.options.idle_timeout,
            frame_timeout=self.options.frame_timeout,
            min_rate=self.options.min_rate,
        )
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = connection
        try:
            await connection.serve()
        except asyncio.CancelledError:
            # Cancelled by stop(): end quietly, the server is going away.
            pass
        finally:
            del self._connections[task]

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to ``shutdown_timeout``), close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.close()
        for task, connection in list(self._connections.items()):
            connection.stop_after_request()
            if connection.idle:
                task.cancel()
        pending = set(self._connections)
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=self.options.shutdown_timeout)
            for task in still_running:
                log.warning(
                    "connection_cancelled",
                    peer=self._connections[task].peer,
                    reason="request did not finish within shutdown_timeout",
                )
                task.cancel()
            if still_running:
                await asyncio.wait(still_running, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.storage.close()
        log.info("server_stopped")

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop cleanly."""
        try:
            await stop.wait()
        finally:
            await self.stop()
