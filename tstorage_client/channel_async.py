"""``AsyncChannel``: the TStorage client over asyncio streams.

The twin of ``tstorage_client.channel.Channel`` with the same operations (from
``tstorage_client._operations``) and the same semantics, awaited: statuses not exceptions,
DISCONNECTED when not connected or when the connection breaks or times out (``timeout``
bounds connecting and each read or write), the channel closes itself after a failed request.

Requests on one channel run one at a time (an ``asyncio.Lock``), so tasks may share a channel.
``get_stream`` accepts a plain or a coroutine callback. ``get_iter`` returns an
:class:`AsyncGetIterator` (``async for``); its ``response`` holds the final ``ResponseAcq``
once the iteration ends. An iteration left early is drained, without decoding, by the next
request on the channel; the abandoned iterator then yields what remains of the batch it
already held and stops with ERROR.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from tstorage_client._channel_base import RECV_SIZE, PendingGet, _ChannelMixin
from tstorage_client._operations import Operation
from tstorage_client.protocol.client import NEED_DATA, RecordsBatch
from tstorage_client.record import Key, Record
from tstorage_client.records_set import AsyncGetCallback
from tstorage_client.response import (
    Response,
    ResponseAcq,
    ResponseGet,
    ResponsePut,
    ResponseStatus,
)

__all__ = ["AsyncChannel", "AsyncGetIterator"]

T = TypeVar("T")
R = TypeVar("R", bound=Response)

_OK = ResponseStatus.OK
_DISCONNECTED = ResponseStatus.DISCONNECTED

# The stream reader pauses the socket above twice this; room for a few large reads.
_READER_LIMIT = 4 * RECV_SIZE


class AsyncChannel(_ChannelMixin[T]):
    """A connection to TStorage for asyncio: ``AsyncChannel(host, port, payload_type, ...)``.

    Use ``await connect()``/``await close()`` or ``async with AsyncChannel(...) as channel:``.
    See ``_ChannelMixin`` for the options (timeout, memory_limit, max_batch_size, ssl_context).
    """

    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------- connection

    async def connect(self) -> Response:
        """Open the connection (no-op when open): OK, or DISCONNECTED if it cannot be made."""
        if self._writer is not None:
            return Response(_OK)
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=(
                        (self.server_hostname or self.host)
                        if self.ssl_context is not None
                        else None
                    ),
                    limit=_READER_LIMIT,
                )
        except OSError:  # TimeoutError is an OSError too
            return Response(_DISCONNECTED)
        return Response(_OK)

    async def close(self) -> None:
        """Close the connection (idempotent); requests then answer DISCONNECTED."""
        self._drop()

    def _drop(self) -> None:
        self._pending = None
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            # No wait_closed(): closing must not hang on an unresponsive peer.
            writer.close()

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._writer is not None

    async def __aenter__(self) -> AsyncChannel[T]:
        await self.connect()
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
        records: Iterable[Record[T]] | Any,
        max_batch_size: int | None = None,
        skip_invalid: bool = False,
    ) -> ResponsePut:
        """Write records; TStorage sets their acq (see ``Channel.put``)."""
        operation = self._put_operation(records, False, max_batch_size, skip_invalid)
        return await self._request(operation, ResponsePut)

    async def puta(
        self,
        records: Iterable[Record[T]] | Any,
        max_batch_size: int | None = None,
        skip_invalid: bool = False,
    ) -> ResponsePut:
        """Write records with the acq set in their keys (see ``Channel.puta``)."""
        operation = self._put_operation(records, True, max_batch_size, skip_invalid)
        return await self._request(operation, ResponsePut)

    async def put_encoded(self, request: bytes) -> ResponsePut:
        """Send a PUT or PUTA request encoded earlier (see ``Channel.put_encoded``)."""
        return await self._request(self._put_encoded_operation(request), ResponsePut)

    async def get(self, key_min: Key, key_max: Key) -> ResponseGet[T]:
        """Read all records with ``key_min <= key < key_max`` (see ``Channel.get``)."""
        operation = self._get_operation(key_min, key_max)
        if operation is None:
            return ResponseGet(ResponseStatus.BAD_REQUEST)
        return await self._request(operation, ResponseGet)

    async def get_acq(self, key_min: Key, key_max: Key) -> ResponseAcq:
        """The acq up to which the range is stable (see ``Channel.get_acq``)."""
        operation = self._get_acq_operation(key_min, key_max)
        if operation is None:
            return ResponseAcq(ResponseStatus.BAD_REQUEST)
        return await self._request(operation, ResponseAcq)

    async def get_stream(
        self, key_min: Key, key_max: Key, callback: AsyncGetCallback[T]
    ) -> ResponseAcq:
        """Read the range, calling ``callback`` (plain or async) with each batch.

        Each batch fits in memory_limit.
        """
        pending = self._stream_operation(key_min, key_max)
        if pending is None:
            return ResponseAcq(ResponseStatus.BAD_REQUEST)
        async with self._lock:
            if not await self._begin():
                return ResponseAcq(_DISCONNECTED)
            self._pending = pending
            while True:
                event = await self._next_batch(pending)
                if type(event) is not RecordsBatch:
                    return event  # type: ignore[return-value]
                result = callback(event.records)
                if inspect.isawaitable(result):
                    await result

    def get_iter(self, key_min: Key, key_max: Key) -> AsyncGetIterator[T]:
        """Read the range lazily (``async for``), with bounded memory. See AsyncGetIterator."""
        return AsyncGetIterator(self, self._stream_operation(key_min, key_max))

    # ------------------------------------------------------------------- the pump

    async def _begin(self) -> bool:
        """Prepare for a new request: finish any abandoned get_iter. False if disconnected."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            pending.parser.discard = True
            while type(await self._advance(pending.op, ResponseAcq)) is RecordsBatch:
                pass
        return self._writer is not None

    async def _request(self, operation: Operation[R] | None, failed: type[R]) -> R:
        async with self._lock:
            if not await self._begin():
                if operation is not None:
                    operation.close()
                return failed(_DISCONNECTED)
            assert operation is not None
            response: R = await self._advance(operation, failed)  # type: ignore[assignment]
            return response

    async def _next_batch(self, pending: PendingGet) -> RecordsBatch | ResponseAcq:
        """The next batch of a get_stream/get_iter, or its final response."""
        if self._pending is not pending:  # abandoned, or the channel was closed
            pending.op.close()
            return ResponseAcq(ResponseStatus.ERROR if self._writer else _DISCONNECTED)
        event = await self._advance(pending.op, ResponseAcq)
        if type(event) is not RecordsBatch and self._pending is pending:
            self._pending = None
        return event

    async def _advance(self, operation: Operation[R], failed: type[R]) -> RecordsBatch | R:
        """Run the operation's I/O until it hands out a batch or returns its response.

        A broken or timed-out connection is closed and answered with ``failed(DISCONNECTED)``;
        any other failed response closes the connection too.
        """
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            operation.close()
            return failed(_DISCONNECTED)
        timeout = self.timeout
        try:
            instruction = operation.send(None)
            while True:
                if instruction is NEED_DATA:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(RECV_SIZE)
                    instruction = operation.send(data)
                elif type(instruction) is RecordsBatch:
                    return instruction
                else:
                    writer.write(instruction)  # type: ignore[arg-type]
                    async with asyncio.timeout(timeout):
                        await writer.drain()
                    instruction = operation.send(None)
        except StopIteration as stop:
            response: R = stop.value
            if response.result != _OK:
                self._drop()
            return response
        except OSError:  # includes timeouts and TLS errors
            self._drop()
            operation.close()
            return failed(_DISCONNECTED)
        except BaseException:
            # A payload that cannot be serialized, or cancellation: the request is half-done.
            self._drop()
            operation.close()
            raise


class AsyncGetIterator(Generic[T]):
    """The records of ``AsyncChannel.get_iter``, lazily: ``async for record in it``.

    ``response`` is None until the iteration ends, then the final ``ResponseAcq``.
    ``aclose()`` (or ``async with``) abandons the iteration.
    """

    def __init__(self, channel: AsyncChannel[T], pending: PendingGet | None) -> None:
        self.response: ResponseAcq | None = None
        self._channel = channel
        self._pending = pending
        self._started = False
        self._records: Iterator[Record[T]] = iter(())

    def __aiter__(self) -> AsyncIterator[Record[T]]:
        return self

    async def __anext__(self) -> Record[T]:
        for record in self._records:  # the common case: the current batch has more
            return record
        while self.response is None:
            batch = await self._fetch()
            if batch is not None:
                self._records = iter(self._channel._codec.iter_records(batch.records))
                for record in self._records:
                    return record
        raise StopAsyncIteration

    async def _fetch(self) -> RecordsBatch | None:
        channel, pending = self._channel, self._pending
        if pending is None:
            self.response = ResponseAcq(ResponseStatus.BAD_REQUEST)
            return None
        async with channel._lock:
            if not self._started:
                self._started = True
                if not await channel._begin():
                    self.response = ResponseAcq(_DISCONNECTED)
                    return None
                channel._pending = pending
            event = await channel._next_batch(pending)
        if type(event) is RecordsBatch:
            return event
        self.response = event  # type: ignore[assignment]
        return None

    async def aclose(self) -> None:
        """Stop iterating; the rest of the response is discarded by the next request."""
        self._records = iter(())
        if self.response is None:
            self.response = ResponseAcq(ResponseStatus.ERROR)

    async def __aenter__(self) -> AsyncGetIterator[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
