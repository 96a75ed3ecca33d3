"""``Channel``: the TStorage client over blocking sockets.

The channel only moves bytes: every request is an operation from
``tstorage_client._operations`` (built on the sans-I/O core in
``tstorage_client.protocol.client``) that this class pumps through a socket.

Outcomes are statuses, never exceptions (``tstorage_client.response``): a channel that is
not connected answers DISCONNECTED at once; a timeout or a broken connection closes the
channel and answers DISCONNECTED; after any failed request the channel closes itself.
``connect()`` can be called again to reconnect.

``get_iter`` returns a :class:`GetIterator`: records arrive lazily, batch by batch, and
once the iteration ends ``GetIterator.response`` holds the final ``ResponseAcq`` (it is also
the generator's return value). Leaving the loop early is safe: the rest of the response is
read and discarded, without decoding, when the next request starts on the channel (or
dropped with the connection by ``close()``); the abandoned iterator then yields what remains
of the batch it already held and stops with ERROR.
"""

from __future__ import annotations

import socket
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

from tstorage_client._channel_base import RECV_SIZE, PendingGet, _ChannelMixin
from tstorage_client._operations import Operation
from tstorage_client.protocol.client import NEED_DATA, RecordsBatch
from tstorage_client.record import Key, Record
from tstorage_client.records_set import GetCallback, RecordsSet
from tstorage_client.response import (
    Response,
    ResponseAcq,
    ResponseGet,
    ResponsePut,
    ResponseStatus,
)

__all__ = ["Channel", "GetIterator"]

T = TypeVar("T")
R = TypeVar("R", bound=Response)

_OK = ResponseStatus.OK
_DISCONNECTED = ResponseStatus.DISCONNECTED


class Channel(_ChannelMixin[T]):
    """A connection to TStorage: ``Channel(host, port, payload_type, ...)``.

    Use ``connect()``/``close()`` or ``with Channel(...) as channel:``. See
    ``_ChannelMixin`` for the options (timeout, memory_limit, max_batch_size, ssl_context).
    """

    _sock: socket.socket | None = None

    # ------------------------------------------------------------------- connection

    def connect(self) -> Response:
        """Open the connection (no-op when open): OK, or DISCONNECTED if it cannot be made."""
        if self._sock is not None:
            return Response(_OK)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError:
            return Response(_DISCONNECTED)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.host
                )
            sock.settimeout(self.timeout)  # from now on each read and write
        except OSError:
            sock.close()
            return Response(_DISCONNECTED)
        self._sock = sock
        return Response(_OK)

    def close(self) -> None:
        """Close the connection (idempotent); requests then answer DISCONNECTED."""
        self._pending = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        return self._sock is not None

    def __enter__(self) -> Channel[T]:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------- requests

    def put(
        self,
        records: Iterable[Record[T]] | Any,
        max_batch_size: int | None = None,
        skip_invalid: bool = False,
    ) -> ResponsePut:
        """Write records; TStorage sets their acq. Returns the acq range it assigned.

        ``records`` is any iterable of Record (consumed in chunks, so a generator streams
        with bounded memory). A record with an invalid key (cid < 0 or a component outside
        its range) ends the stream there unless ``skip_invalid``, which drops it.
        """
        operation = self._put_operation(records, False, max_batch_size, skip_invalid)
        return self._request(operation, ResponsePut)

    def put_encoded(self, request: bytes) -> ResponsePut:
        """Send a PUT or PUTA request encoded earlier (``protocol.client.encode_put``).

        For callers that keep requests as bytes, such as a disk spool: no records are built or
        encoded again. ValueError if ``request`` is not a PUT or PUTA request.
        """
        return self._request(self._put_encoded_operation(request), ResponsePut)

    def puta(
        self,
        records: Iterable[Record[T]] | Any,
        max_batch_size: int | None = None,
        skip_invalid: bool = False,
    ) -> ResponsePut:
        """Write records with the acq set in their keys (otherwise like ``put``)."""
        operation = self._put_operation(records, True, max_batch_size, skip_invalid)
        return self._request(operation, ResponsePut)

    def get(self, key_min: Key, key_max: Key) -> ResponseGet[T]:
        """Read all records with ``key_min <= key < key_max`` (NO_MEMORY beyond memory_limit).

        On failure ``data`` is empty.
        """
        operation = self._get_operation(key_min, key_max)
        if operation is None:
            return ResponseGet(ResponseStatus.BAD_REQUEST)
        return self._request(operation, ResponseGet)

    def get_acq(self, key_min: Key, key_max: Key) -> ResponseAcq:
        """The acq up to which the range is stable (see the protocol's GET_ACQ)."""
        operation = self._get_acq_operation(key_min, key_max)
        if operation is None:
            return ResponseAcq(ResponseStatus.BAD_REQUEST)
        return self._request(operation, ResponseAcq)

    def get_stream(self, key_min: Key, key_max: Key, callback: GetCallback[T]) -> ResponseAcq:
        """Read the range, calling ``callback`` with batches that each fit in memory_limit."""
        pending = self._stream_operation(key_min, key_max)
        if pending is None:
            return ResponseAcq(ResponseStatus.BAD_REQUEST)
        if not self._begin():
            return ResponseAcq(_DISCONNECTED)
        self._pending = pending
        while True:
            event = self._next_batch(pending)
            if type(event) is not RecordsBatch:
                return event  # type: ignore[return-value]
            callback(event.records)

    def get_iter(self, key_min: Key, key_max: Key) -> GetIterator[T]:
        """Read the range lazily, record by record, with bounded memory.

        The request is sent when iteration starts. See :class:`GetIterator`.
        """
        return GetIterator(self, self._stream_operation(key_min, key_max))

    # ------------------------------------------------------------------- the pump

    def _begin(self) -> bool:
        """Prepare for a new request: finish any abandoned get_iter. False if disconnected."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            pending.parser.discard = True
            while type(self._advance(pending.op, ResponseAcq)) is RecordsBatch:
                pass
        return self._sock is not None

    def _request(self, operation: Operation[R] | None, failed: type[R]) -> R:
        if not self._begin():
            if operation is not None:
                operation.close()
            return failed(_DISCONNECTED)
        assert operation is not None
        response: R = self._advance(operation, failed)  # type: ignore[assignment]
        return response

    def _next_batch(self, pending: PendingGet) -> RecordsBatch | ResponseAcq:
        """The next batch of a get_stream/get_iter, or its final response."""
        if self._pending is not pending:  # abandoned, or the channel was closed
            pending.op.close()
            return ResponseAcq(ResponseStatus.ERROR if self._sock else _DISCONNECTED)
        event = self._advance(pending.op, ResponseAcq)
        if type(event) is not RecordsBatch and self._pending is pending:
            self._pending = None
        return event

    def _advance(self, operation: Operation[R], failed: type[R]) -> RecordsBatch | R:
        """Run the operation's I/O until it hands out a batch or returns its response.

        A broken or timed-out connection is closed and answered with ``failed(DISCONNECTED)``;
        any other failed response closes the connection too.
        """
        sock = self._sock
        if sock is None:
            operation.close()
            return failed(_DISCONNECTED)
        try:
            instruction = operation.send(None)
            while True:
                if instruction is NEED_DATA:
                    instruction = operation.send(sock.recv(RECV_SIZE))
                elif type(instruction) is RecordsBatch:
                    return instruction
                else:
                    sock.sendall(instruction)  # type: ignore[arg-type]
                    instruction = operation.send(None)
        except StopIteration as stop:
            response: R = stop.value
            if response.result != _OK:
                self.close()
            return response
        except OSError:  # includes timeouts and TLS errors
            self.close()
            operation.close()
            return failed(_DISCONNECTED)
        except BaseException:
            # E.g. a payload the payload type cannot serialize: the request is half-sent.
            self.close()
            operation.close()
            raise


class GetIterator(Generic[T]):
    """The records of ``Channel.get_iter``, lazily; iterate it once.

    ``response`` is None until the iteration ends, then the final ``ResponseAcq``:
    OK with the range's acq, or the failure status (records seen before a failure may be
    incomplete). ``close()`` (or the ``with`` statement) abandons the iteration.
    """

    def __init__(self, channel: Channel[T], pending: PendingGet | None) -> None:
        self.response: ResponseAcq | None = None
        self._channel = channel
        self._pending = pending
        self._records = self._generate()

    def __iter__(self) -> Iterator[Record[T]]:
        return self._records

    def __next__(self) -> Record[T]:
        return next(self._records)

    def close(self) -> None:
        """Stop iterating; the rest of the response is discarded by the next request."""
        self._records.close()
        if self.response is None:
            self.response = ResponseAcq(ResponseStatus.ERROR)

    def __enter__(self) -> GetIterator[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _generate(self) -> Generator[Record[T], None, ResponseAcq]:
        channel, pending = self._channel, self._pending
        if pending is None:
            self.response = ResponseAcq(ResponseStatus.BAD_REQUEST)
            return self.response
        if not channel._begin():
            self.response = ResponseAcq(_DISCONNECTED)
            return self.response
        channel._pending = pending
        records_of = channel._codec.iter_records
        while True:
            event = channel._next_batch(pending)
            if type(event) is not RecordsBatch:
                self.response = event  # type: ignore[assignment]
                return event  # type: ignore[return-value]
            batch: RecordsSet[T] = event.records
            yield from records_of(batch)
