"""What Channel and AsyncChannel share: configuration, and building the request operations."""

from __future__ import annotations

import ssl
import struct
from collections.abc import Iterable
from typing import Any, Final, Generic, TypeVar, cast

from tstorage_client._operations import (
    Operation,
    get_acq_operation,
    get_into_operation,
    get_operation,
    put_operation,
    stream_operation,
)
from tstorage_client.payload_type import PayloadType
from tstorage_client.protocol import wire
from tstorage_client.protocol._codec import RecordsCodec
from tstorage_client.protocol.client import (
    GetIntoParser,
    GetResponseParser,
    InPlaceCodec,
    encode_get,
    encode_get_acq,
    encode_put,
)
from tstorage_client.protocol.codecs import codec_for
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseAcq, ResponseGet, ResponsePut

__all__ = [
    "MAX_BATCH_SIZE",
    "RECV_BUFFER_SIZE",
    "RECV_SIZE",
    "PendingGet",
    "_ChannelMixin",
    "read_size_for",
]

T = TypeVar("T")

RECV_SIZE: Final = 256 << 10
"""Bytes asked for per read at least: large enough to amortise per-read work over thousands
of records, small enough to stay in cache (measured: 256 KiB beats 1 MiB and 4 MiB)."""

RECV_BUFFER_SIZE: Final = 65536
"""The reference client's default ``recv_buffer_size`` (a hint here: see ``read_size_for``)."""

MAX_BATCH_SIZE: Final = 2**31 - 1
"""The default ``max_batch_size`` of put/puta: the largest a batch header can announce."""


class PendingGet:
    """A get_stream / get_iter in progress on a channel (its operation, parser, read size)."""

    __slots__ = ("op", "parser", "read_size")

    def __init__(
        self, op: Operation[ResponseAcq], parser: GetResponseParser, read_size: int
    ) -> None:
        self.op = op
        self.parser = parser
        self.read_size = read_size


def read_size_for(recv_buffer_size: int) -> int:
    """Bytes per read for a request: ``recv_buffer_size`` is honoured when larger than RECV_SIZE."""
    if type(recv_buffer_size) is not int or recv_buffer_size <= 0:
        raise ValueError(f"recv_buffer_size must be a positive int, got {recv_buffer_size!r}")
    return max(recv_buffer_size, RECV_SIZE)


def _check_limit(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{name} must be positive or None (no limit), got {value!r}")


class _ChannelMixin(Generic[T]):
    """Configuration and request building common to both channels.

    ``payload_type`` converts record values to and from bytes (``_payload_type`` may be
    replaced between requests; the next request uses the new one). ``timeout`` bounds
    connecting and each read or write (seconds; None: no limit). ``memory_limit`` bounds the
    wire bytes of records (4 + 32 + payload each) that ``get`` may hold and that one batch of
    ``get_stream`` / ``get_iter`` may hold (None: no limit). ``ssl_context`` turns on TLS.
    Keyword-only extras beyond the reference client: ``max_batch_size`` (the channel's
    bound on a per-cid batch of a put, bytes; a put's own argument can only lower it),
    ``connect_timeout`` (default ``timeout``) and ``server_hostname`` (the name to verify in
    the server certificate, default ``host``).
    """

    _transport: Any = None

    def _configure(
        self,
        host: str,
        port: int,
        payload_type: PayloadType[T],
        timeout: float | None,
        memory_limit: int | None,
        ssl_context: ssl.SSLContext | None,
        max_batch_size: int,
        connect_timeout: float | None,
        server_hostname: str | None,
    ) -> None:
        _check_limit("timeout", timeout)
        _check_limit("memory_limit", memory_limit)
        _check_limit("connect_timeout", connect_timeout)
        if not 0 < max_batch_size < 2**31:
            raise ValueError(f"max_batch_size must be in 1 .. 2**31-1, got {max_batch_size}")
        self.host = host
        self.port = port
        self._payload_type = payload_type
        self._timeout = timeout
        self._memory_limit = memory_limit
        self.max_batch_size = max_batch_size
        self.ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self.server_hostname = server_hostname
        """Name the server certificate must carry (TLS); default: ``host``."""
        self._codec: RecordsCodec = codec_for(payload_type)
        self._codec_of: PayloadType[Any] = payload_type
        # The get_iter whose response is being read, if any. A new request first drains it.
        self._pending: PendingGet | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, {self.port!r}, {self._payload_type!r})"

    # ------------------------------------------------------------------- settings

    @property
    def payload_type(self) -> PayloadType[T]:
        """The payload type of the next request (the same as ``_payload_type``)."""
        return self._payload_type

    @payload_type.setter
    def payload_type(self, payload_type: PayloadType[T]) -> None:
        self._payload_type = payload_type

    @property
    def timeout(self) -> float | None:
        """Seconds allowed for each read or write (None: no limit); applies to a live connection."""
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: float | None) -> None:
        _check_limit("timeout", timeout)
        self._timeout = timeout
        if self._transport is not None:
            self._transport.set_timeout(timeout)

    @property
    def memory_limit(self) -> int | None:
        """Wire bytes of records a get (or one streamed batch) may hold; None: no limit."""
        return self._memory_limit

    @memory_limit.setter
    def memory_limit(self, memory_limit: int | None) -> None:
        _check_limit("memory_limit", memory_limit)
        self._memory_limit = memory_limit

    @property
    def connect_timeout(self) -> float | None:
        """Bound of connecting (TCP and TLS handshake); default: ``timeout``."""
        return self._timeout if self._connect_timeout is None else self._connect_timeout

    def _current_codec(self) -> RecordsCodec:
        """The codec of ``_payload_type`` (rebuilt when a program replaced it)."""
        payload_type = self._payload_type
        if payload_type is not self._codec_of:
            self._codec = codec_for(payload_type)
            self._codec_of = payload_type
        return self._codec

    # ------------------------------------------------------------------- operations

    def _put_operation(
        self,
        data: Iterable[Record[T]] | Any,
        with_acq: bool,
        max_batch_size: int,
        skip_invalid: bool,
    ) -> Operation[ResponsePut]:
        chunks = encode_put(
            self._current_codec(),
            data,
            with_acq=with_acq,
            max_batch_size=min(self.max_batch_size, max_batch_size),
            skip_invalid=skip_invalid,
        )
        return put_operation(chunks)

    @staticmethod
    def _put_encoded_operation(request: bytes) -> Operation[ResponsePut]:
        kind = wire.HEADER.unpack_from(request)[0] if len(request) >= wire.HEADER_SIZE else None
        if kind not in (wire.RequestType.PUT, wire.RequestType.PUTA):
            raise ValueError("not an encoded PUT or PUTA request")
        return put_operation(iter((request,)))

    def _get_operation(self, key_min: Key, key_max: Key) -> Operation[ResponseGet[T]] | None:
        """None when the keys cannot be put on the wire (the request would be refused)."""
        try:
            request = encode_get(key_min, key_max)
        except (struct.error, TypeError):
            return None
        codec = self._current_codec()
        if self._memory_limit is None and getattr(codec, "receives_in_place", False):
            # Records that keep their wire layout land in one buffer, handed out as one batch.
            return get_into_operation(request, GetIntoParser(cast(InPlaceCodec, codec)))
        parser = GetResponseParser(codec, self._memory_limit, batch_per_read=False)
        return get_operation(request, parser)

    def _stream_operation(
        self, key_min: Key, key_max: Key, recv_buffer_size: int, fill_batches: bool
    ) -> PendingGet | None:
        """get_stream (``fill_batches``: batches filled up to memory_limit) or get_iter."""
        read_size = read_size_for(recv_buffer_size)
        try:
            request = encode_get(key_min, key_max)
        except (struct.error, TypeError):
            return None
        limit = self._memory_limit
        # Without a limit, a filled batch would be the whole response: hand out each read.
        batch_per_read = not fill_batches or limit is None
        parser = GetResponseParser(self._current_codec(), limit, batch_per_read=batch_per_read)
        return PendingGet(stream_operation(request, parser), parser, read_size)

    def _get_acq_operation(self, key_min: Key, key_max: Key) -> Operation[ResponseAcq] | None:
        try:
            request = encode_get_acq(key_min, key_max)
        except (struct.error, TypeError):
            return None
        return get_acq_operation(request)


def tcp_port(port: int) -> int:
    """``port`` if a TCP connection can be made to it; else OSError (connect answers ERROR).

    The socket layer would wrap a port above 65535 (``getaddrinfo`` takes it modulo 65536:
    port 70000 reached whatever listens on 4464), and asyncio raised OverflowError.
    """
    if isinstance(port, int) and not 0 < port <= 65535:
        raise OSError(f"port {port} is out of range (1-65535)")
    return port
