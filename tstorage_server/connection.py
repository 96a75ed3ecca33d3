"""One client connection: read requests, answer them in order, close on the first error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from tstorage_client.protocol.server import (
    NEED_DATA,
    ConnectionClosed,
    GetAcqRequest,
    GetRequest,
    ProtocolError,
    PutaBatch,
    PutBatch,
    PutEnd,
    PutStart,
    RequestParser,
    encode_acq,
    encode_error,
    encode_get_end,
    encode_get_failed_end,
    encode_get_header,
    encode_put_ok,
)
from tstorage_server.logs import LogLimiter
from tstorage_server.rules import range_error, storable_rows
from tstorage_server.storage.base import PutTransaction, Storage

__all__ = ["READ_SIZE", "Connection", "log_limited"]

READ_SIZE = 256 * 1024
"""Bytes read from the socket at a time; with one unfinished record this bounds the buffer."""

log = structlog.get_logger("tstorage_server")
_limiter = LogLimiter()


def log_limited(level: str, event: str, **fields: Any) -> None:
    """Log a per-connection event unless too many of its kind came just now."""
    now = time.monotonic()
    suppressed = _limiter.allow(event, now)
    if suppressed is None:
        count, window_end = _limiter.pending(event)
        if count == 1:  # the first one left out: say how many at the end of the window
            with contextlib.suppress(RuntimeError):  # no running loop: the next event says it
                asyncio.get_running_loop().call_later(
                    max(0.0, window_end - now), _report_suppressed, level, event
                )
        return
    if suppressed:
        fields["suppressed"] = suppressed
    getattr(log, level)(event, **fields)


def _report_suppressed(level: str, event: str) -> None:
    """At the end of a window: the count of ``event``s left out, unless an event took it."""
    count = _limiter.take(event)
    if count:
        getattr(log, level)(
            "log_events_suppressed",
            suppressed_event=event,
            suppressed=count,
            period_s=_limiter.period,
        )


class _RequestFailed(Exception):
    """A request is refused; the reason is logged, an error header sent, the connection closed."""


class Connection:
    """Serves the requests of one connection strictly one after another."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        storage: Storage,
        idle_timeout: float,
        *,
        frame_timeout: float = 10.0,
        min_rate: int = 4096,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._storage = storage
        self._idle_timeout = idle_timeout
        self._frame_timeout = frame_timeout
        self._min_rate = max(1, min_rate)
        self._parser = RequestParser()
        self._put: PutTransaction | None = None
        self._stopping = False
        self.requests = 0
        self.idle = True
        """True while waiting for the first byte of the next request (safe to cancel)."""
        peer: Any = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def stop_after_request(self) -> None:
        """Finish the request in flight (if any), then close."""
        self._stopping = True

    async def serve(self) -> None:
        """Run until the peer closes, an error, an idle timeout or a stop."""
        reason = "closed by peer"
        log_limited("info", "connection_open", peer=self.peer)
        try:
            reason = await self._serve_requests()
        except _RequestFailed as failed:
            reason = f"request failed: {failed}"
        except (ConnectionError, OSError) as error:
            reason = f"connection lost: {error!r}"
        except Exception as error:
            # A server bug or a storage failure: this connection ends, the server serves on.
            reason = f"internal error: {error!r}"
            log.exception("request_failed", peer=self.peer, reason=reason)
            with contextlib.suppress(Exception):
                self._writer.write(encode_error())
        except asyncio.CancelledError:
            reason = "server stopping"
            raise
        finally:
            if self._put is not None:
                await self._put.rollback()
                self._put = None
            log_limited(
                "info", "connection_close", peer=self.peer, requests=self.requests, reason=reason
            )
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 5)

    async def _serve_requests(self) -> str:
        parser = self._parser
        # The request being received: when its first byte came and how many bytes it has
        # had. Each read only waits until the request's deadline (frame_timeout plus what
        # min_rate allows for its bytes so far), so trickling bytes does not extend it the
        # way a per-read timeout would, and a request made of many small frames cannot
        # trickle either.
        frame_started: float | None = None
        frame_bytes = 0
        while True:
            event = parser.next_event()
            if event is NEED_DATA:
                self.idle = not parser.in_request and self._put is None
                if self.idle and self._stopping:
                    return "server stopping"
                if self.idle:
                    frame_started = None
                    wait = self._idle_timeout
                else:
                    if frame_started is None:
                        frame_started, frame_bytes = time.monotonic(), 0
                    deadline = frame_started + self._frame_timeout + frame_bytes / self._min_rate
                    wait = min(self._idle_timeout, deadline - time.monotonic())
                try:
                    if wait <= 0:
                        raise TimeoutError
                    data = await asyncio.wait_for(self._reader.read(READ_SIZE), wait)
                except TimeoutError:
                    if self.idle:
                        return "idle timeout"
                    await self._fail(
                        f"request too slow: less than {self._min_rate} B/s after the first"
                        f" {self._frame_timeout} s"
                    )
                if self.idle:
                    frame_started, frame_bytes = time.monotonic(), 0
                self.idle = False
                frame_bytes += len(data)
                parser.receive_data(data)
                continue
            if isinstance(event, PutBatch):
                assert self._put is not None
                await self._put.add(event.cid, storable_rows(event.cid, event.rows, False))
                # Reads from a fast client and in-memory staging never suspend: let the other
                # connections run between batches (each at most MAX_ROWS_PER_EVENT records).
                await asyncio.sleep(0)
            elif isinstance(event, PutaBatch):
                assert self._put is not None
                await self._put.add(event.cid, storable_rows(event.cid, event.rows, True))
                await asyncio.sleep(0)
            elif isinstance(event, PutStart):
                self._put = self._storage.begin_put(event.with_acq)
            elif isinstance(event, PutEnd):
                await self._end_put()
            elif isinstance(event, GetRequest):
                await self._get(event)
            elif isinstance(event, GetAcqRequest):
                await self._get_acq(event)
            elif isinstance(event, ProtocolError):
                await self._fail(event.reason)
            elif isinstance(event, ConnectionClosed):
                return "closed by peer"

    async def _fail(self, reason: str, response: bytes | None = None) -> None:
        """Log, answer the error header (or ``response``), and end the connection."""
        log_limited("warning", "request_failed", peer=self.peer, reason=reason)
        if self._put is not None:
            await self._put.rollback()
            self._put = None
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            self._writer.write(encode_error() if response is None else response)
            await self._drain()
        raise _RequestFailed(reason)

    async def _drain(self) -> None:
        """Wait until the peer has taken enough of our output (backpressure), bounded in time.

        A client that stops reading would otherwise hold its connection, and for SQLite a read
        snapshot, forever: after ``idle_timeout`` it is treated as gone.
        """
        try:
            await asyncio.wait_for(self._writer.drain(), self._idle_timeout)
        except TimeoutError:
            raise ConnectionError(f"peer took no data for {self._idle_timeout} s") from None

    async def _end_put(self) -> None:
        put = self._put
        assert put is not None
        self._put = None
        try:
            acq_min, acq_max = await put.commit()
        except Exception as error:  # a storage failure fails this request only
            await self._fail(f"storage error: {error!r}")
        await self._respond(encode_put_ok(acq_min, acq_max))

    async def _respond(self, data: bytes) -> None:
        self.requests += 1
        self._writer.write(data)
        await self._drain()

    def _check_range(self, event: GetRequest | GetAcqRequest) -> str | None:
        # GET_ACQ answers an empty box OK (docs/protocol.md, "Range validity").
        return range_error(
            event.key_min,
            event.key_max,
            self._storage.clock.next_acq(),
            allow_empty=isinstance(event, GetAcqRequest),
        )

    async def _get_acq(self, event: GetAcqRequest) -> None:
        reason = self._check_range(event)
        if reason is not None:
            await self._fail(f"GET_ACQ: {reason}")
        await self._respond(encode_acq(self._acq0(event)))

    def _acq0(self, event: GetRequest | GetAcqRequest) -> int:
        return min(self._storage.clock.stable(), event.key_max.acq)

    async def _get(self, event: GetRequest) -> None:
        reason = self._check_range(event)
        if reason is not None:
            await self._fail(f"GET: {reason}")
        # acq0 before the read starts: every record below it is then in the read's snapshot.
        acq = self._acq0(event)
        writer = self._writer
        writer.write(encode_get_header())
        records = self._storage.read(event.key_min, event.key_max)
        try:
            async for chunk in records:
                writer.write(chunk)
                # Backpressure: never read ahead of what the client has taken.
                await self._drain()
        except (ConnectionError, OSError):
            raise
        except Exception as error:  # a storage failure mid-stream: the "failed end" of a GET
            await self._fail(f"GET: storage error: {error!r}", encode_get_failed_end())
        finally:
            await records.aclose()
        await self._respond(encode_get_end(acq))
