"""The requests of both channels, written once: this is the asyncio original.

``_channel_core_sync.py`` is generated from this file by ``tools/unasync.py`` (``async`` and
``await`` dropped, the asyncio transport module swapped for its blocking twin, which has the
same names); a test fails when the two drift apart. Edit this file, then run
``python tools/unasync.py``.

Every request is an operation from ``tstorage_client._operations`` (built on the sans-I/O
core) that this class pumps through a transport; all protocol decisions live there. Outcomes
are statuses, never exceptions: a channel that is not connected answers DISCONNECTED at once;
a timeout or a broken connection closes the channel and answers DISCONNECTED; after any failed
request the channel closes itself. ``connect()`` can be called again to reconnect.

``get_iter`` yields the records and then, as its last item, the final ``ResponseAcq``.
Leaving the loop early is safe: the rest of the response is read and discarded, without
decoding, when the next request starts on the channel (or dropped with the connection by
``close()``); the abandoned iteration, if resumed, yields what remains of the batch it
already held and then an ERROR response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from tstorage_client._channel_base import (
    MAX_BATCH_SIZE,
    RECV_BUFFER_SIZE,
    RECV_SIZE,
    PendingGet,
    _ChannelMixin,
    read_size_for,
)
from tstorage_client._io_async import AsyncTransport, RequestLock, deliver, open_transport
from tstorage_client._operations import Operation
from tstorage_client.protocol.client import NEED_DATA, ReadInto, RecordsBatch
from tstorage_client.record import Key, Record
from tstorage_client.response import (
    Response,
    ResponseAcq,
    ResponseGet,
    ResponsePut,
    ResponseStatus,
)

__all__ = ["_AsyncChannelCore"]

T = TypeVar("T")
R = TypeVar("R", bound=Response)

_OK = ResponseStatus.OK
_ERROR = ResponseStatus.ERROR
_DISCONNECTED = ResponseStatus.DISCONNECTED
_BAD_REQUEST = ResponseStatus.BAD_REQUEST


class _AsyncChannelCore(_ChannelMixin[T]):
    """Connection handling, the requests and the I/O pump (constructors: the public classes)."""

    _transport: AsyncTransport | None = None

    def _init_io(self) -> None:
        self._lock = RequestLock()

    # ------------------------------------------------------------------- connection

    async def connect(self) -> Response:
        """Open the connection (no-op when open): OK, or ERROR when it cannot be made."""
        try:
            await self._open()
        except OSError:  # refused, unreachable, timed out, TLS failed
            return Response(_ERROR)
        return Response(_OK)

    async def _open(self) -> None:
        if self._transport is None:
            self._transport = await open_transport(
                self.host,
                self.port,
                self.ssl_context,
                self.server_hostname or self.host,
                self.connect_timeout,
                self._timeout,
            )

    async def close(self) -> Response:
        """Close the connection: OK, or ERROR when it was not open."""
        if self._transport is None:
            return Response(_ERROR)
        self._drop()
        return Response(_OK)

    def _drop(self) -> None:
        self._pending = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._transport is not None

    async def __aenter__(self) -> Self:
        """Connect; the connection error (an OSError) is raised."""
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------- requests

    async def put(
        self,
        data: Iterable[Record[T]] | Any,
        max_batch_size: int = MAX_BATCH_SIZE,
        skip_invalid: bool = False,
    ) -> ResponsePut:
        """Write records; TStorage sets their acq. Returns the acq range it assigned.

        ``data`` is any iterable of Record (consumed in chunks, so a generator streams with
        bounded memory). Records are grouped by cid into batches of at most
        ``max_batch_size`` bytes (and of the channel's ``max_batch_size``), at least one
        record each. A record with an invalid key (cid < 0 or a component outside its
        range) ends the request there (what came before is sent), unless ``skip_invalid``,
        which drops it.
        """
        operation = self._put_operation(data, False, max_batch_size, skip_invalid)
        return await self._request(operation, ResponsePut)

    async def puta(
        self,
        data: Iterable[Record[T]] | Any,
        max_batch_size: int = MAX_BATCH_SIZE,
        skip_invalid: bool = False,
    ) -> ResponsePut:
        """Write records with the acq set in their keys (otherwise like ``put``)."""
        operation = self._put_operation(data, True, max_batch_size, skip_invalid)
        return await self._request(operation, ResponsePut)

    async def put_encoded(self, request: bytes) -> ResponsePut:
        """Send a PUT or PUTA request encoded earlier (``protocol.client.encode_put``).

        For callers that keep requests as bytes, such as a disk spool: no records are built or
        encoded again. ValueError if ``request`` is not a PUT or PUTA request.
        """
        return await self._request(self._put_encoded_operation(request), ResponsePut)

    async def get(
        self, key_min: Key, key_max: Key, recv_buffer_size: int = RECV_BUFFER_SIZE
    ) -> ResponseGet[T]:
        """Read all records with ``key_min <= key < key_max`` into ``data``, with the acq.

        BAD_REQUEST when TStorage refuses the range, ERROR when it fails after records,
        DISCONNECTED when the connection ends, UNPARSEABLE_ENTITY for a record that does not
        decode, NO_MEMORY beyond ``memory_limit``; on failure ``data`` holds what was read.
        ``recv_buffer_size`` is a hint: reads are never smaller than 256 KiB.
        """
        read_size = read_size_for(recv_buffer_size)
        operation = self._get_operation(key_min, key_max)
        if operation is None:
            return ResponseGet(_BAD_REQUEST)
        return await self._request(operation, ResponseGet, read_size)

    async def get_acq(self, key_min: Key, key_max: Key) -> ResponseAcq:
        """The acq up to which the range is stable (the protocol's GET_ACQ); ERROR if refused."""
        operation = self._get_acq_operation(key_min, key_max)
        if operation is None:
            return ResponseAcq(_BAD_REQUEST)
        return await self._request(operation, ResponseAcq)

    async def get_stream(
        self,
        key_min: Key,
        key_max: Key,
        callback: Callable[[Any], Any],
        recv_buffer_size: int = RECV_BUFFER_SIZE,
    ) -> ResponseAcq:
        """Read the range, calling ``callback(records)`` with batches; returns the final acq.

        Each batch holds at most ``memory_limit`` wire bytes of records (filled up to it;
        without a limit, a batch is what one read brought); the callback is never called
        with an empty batch. A record larger than ``memory_limit``: NO_MEMORY.
        """
        pending = self._stream_operation(key_min, key_max, recv_buffer_size, True)
        if pending is None:
            return ResponseAcq(_BAD_REQUEST)
        async with self._lock:
            if not await self._begin():
                return ResponseAcq(_DISCONNECTED)
            self._pending = pending
            while True:
                event = await self._next_batch(pending)
                if type(event) is not RecordsBatch:
                    return event  # type: ignore[return-value]
                await deliver(callback, event.records)

    async def get_iter(
        self, key_min: Key, key_max: Key, recv_buffer_size: int = RECV_BUFFER_SIZE
    ) -> AsyncIterator[Record[T] | ResponseAcq]:
        """Yield every record of the range, then the final ``ResponseAcq`` (OK or not).

        Records are read batch by batch (each within ``memory_limit``), so any range fits
        in bounded memory. Not connected: it yields one DISCONNECTED response.
        """
        pending = self._stream_operation(key_min, key_max, recv_buffer_size, False)
        if pending is None:
            yield ResponseAcq(_BAD_REQUEST)
            return
        async with self._lock:
            started = await self._begin()
            if started:
                self._pending = pending
        if not started:
            yield ResponseAcq(_DISCONNECTED)
            return
        records_of = pending.parser.codec.iter_records
        while True:
            async with self._lock:
                event = await self._next_batch(pending)
            if type(event) is not RecordsBatch:
                yield event  # type: ignore[misc]
                return
            for record in records_of(event.records):
                yield record

    # ------------------------------------------------------------------- the pump

    async def _begin(self) -> bool:
        """Prepare for a new request: finish any abandoned get_iter. False if disconnected."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            pending.parser.discard = True
            while (
                type(await self._advance(pending.op, ResponseAcq, pending.read_size))
                is RecordsBatch
            ):
                pass
        return self._transport is not None

    async def _request(
        self, operation: Operation[R] | None, failed: type[R], read_size: int = RECV_SIZE
    ) -> R:
        async with self._lock:
            if not await self._begin():
                if operation is not None:
                    operation.close()
                return failed(_DISCONNECTED)
            assert operation is not None
            response: R = await self._advance(operation, failed, read_size)  # type: ignore[assignment]
            return response

    async def _next_batch(self, pending: PendingGet) -> RecordsBatch | ResponseAcq:
        """The next batch of a get_stream/get_iter, or its final response."""
        if self._pending is not pending:  # abandoned, or the channel was closed
            pending.op.close()
            return ResponseAcq(_ERROR if self._transport else _DISCONNECTED)
        event = await self._advance(pending.op, ResponseAcq, pending.read_size)
        if type(event) is not RecordsBatch and self._pending is pending:
            self._pending = None
        return event

    async def _advance(
        self, operation: Operation[R], failed: type[R], read_size: int
    ) -> RecordsBatch | R:
        """Run the operation's I/O until it hands out a batch or returns its response.

        A read that fails (broken connection, timeout) closes the channel and ends the input,
        so the operation answers DISCONNECTED with what it had read; a failed write answers
        ``failed(DISCONNECTED)``; any other failed response closes the connection too.
        """
        transport = self._transport
        if transport is None:
            operation.close()
            return failed(_DISCONNECTED)
        read, read_into, write = transport.read, transport.read_into, transport.write
        try:
            instruction = operation.send(None)
            while True:
                if instruction is NEED_DATA:
                    try:
                        data = await read(read_size)
                    except OSError:  # includes timeouts and TLS errors
                        self._drop()
                        data = b""
                    instruction = operation.send(data)
                elif type(instruction) is ReadInto:
                    try:
                        count = await read_into(instruction.buffer)
                    except OSError:  # as for read: the input ends
                        self._drop()
                        count = 0
                    instruction = operation.send(count)
                elif type(instruction) is RecordsBatch:
                    return instruction
                else:
                    await write(instruction)  # type: ignore[arg-type]
                    instruction = operation.send(None)
        except StopIteration as stop:
            response: R = stop.value
            if response.status is not _OK:
                self._drop()
            return response
        except OSError:  # a write failed (timeouts and TLS errors included)
            self._drop()
            operation.close()
            return failed(_DISCONNECTED)
        except BaseException:
            # E.g. a payload the payload type cannot serialize: the request is half-sent.
            self._drop()
            operation.close()
            raise
