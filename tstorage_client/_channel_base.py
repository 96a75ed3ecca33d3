"""What Channel and AsyncChannel share: configuration, and building the request operations."""

from __future__ import annotations

import ssl
import struct
from collections.abc import Iterable
from typing import Any, Final, Generic, TypeVar

from tstorage_client._operations import (
    Operation,
    get_acq_operation,
    get_operation,
    put_operation,
    stream_operation,
)
from tstorage_client.payload_type import PayloadType
from tstorage_client.protocol import wire
from tstorage_client.protocol._codec import RecordsCodec, codec_for
from tstorage_client.protocol.client import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MEMORY_LIMIT,
    GetResponseParser,
    encode_get,
    encode_get_acq,
    encode_put,
)
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseAcq, ResponseGet, ResponsePut

__all__ = ["DEFAULT_TIMEOUT", "RECV_SIZE", "PendingGet", "_ChannelMixin"]

T = TypeVar("T")

DEFAULT_TIMEOUT: Final = 60.0
"""Seconds allowed for connecting and for each read or write (None: wait forever)."""

RECV_SIZE: Final = 256 << 10
"""Bytes asked for per read: large enough to amortise per-read work over thousands of
records, small enough to stay in cache (measured: 256 KiB beats 1 MiB and 4 MiB)."""


class PendingGet:
    """A get_iter in progress on a channel (its operation and parser)."""

    __slots__ = ("op", "parser")

    def __init__(self, op: Operation[ResponseAcq], parser: GetResponseParser) -> None:
        self.op = op
        self.parser = parser


class _ChannelMixin(Generic[T]):
    """Configuration and request building common to both channels.

    ``payload_type`` converts record values to and from bytes; ``timeout`` bounds connecting
    and each read or write (seconds, None for no limit); ``memory_limit`` bounds what one
    GET may hold (wire bytes of records: 4 + 32 + payload each); ``max_batch_size`` bounds
    one per-cid batch of a put (bytes); ``ssl_context`` turns on TLS. Keyword-only extras
    beyond the reference client: ``connect_timeout`` (default ``timeout``) and
    ``server_hostname`` (the name to verify in the server certificate, default ``host``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        payload_type: PayloadType[T],
        timeout: float | None = DEFAULT_TIMEOUT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        ssl_context: ssl.SSLContext | None = None,
        *,
        connect_timeout: float | None = None,
        server_hostname: str | None = None,
    ) -> None:
        if memory_limit <= 0:
            raise ValueError(f"memory_limit must be positive, got {memory_limit}")
        if not 0 < max_batch_size < 2**31:
            raise ValueError(f"max_batch_size must be in 1 .. 2**31-1, got {max_batch_size}")
        self.host = host
        self.port = port
        self.payload_type = payload_type
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.max_batch_size = max_batch_size
        self.ssl_context = ssl_context
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        """Bound of connecting (TCP and TLS handshake); default: ``timeout``."""
        self.server_hostname = server_hostname
        """Name the server certificate must carry (TLS); default: ``host``."""
        self._codec: RecordsCodec = codec_for(payload_type)
        # The get_iter whose response is being read, if any. A new request first drains it.
        self._pending: PendingGet | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, {self.port!r}, {self.payload_type!r})"

    def _put_operation(
        self,
        records: Iterable[Record[T]] | Any,
        with_acq: bool,
        max_batch_size: int | None,
        skip_invalid: bool,
    ) -> Operation[ResponsePut]:
        chunks = encode_put(
            self._codec,
            records,
            with_acq=with_acq,
            max_batch_size=self.max_batch_size if max_batch_size is None else max_batch_size,
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
        parser = GetResponseParser(self._codec, self.memory_limit, batch_per_read=False)
        return get_operation(request, parser)

    def _stream_operation(self, key_min: Key, key_max: Key) -> PendingGet | None:
        try:
            request = encode_get(key_min, key_max)
        except (struct.error, TypeError):
            return None
        parser = GetResponseParser(self._codec, self.memory_limit)
        return PendingGet(stream_operation(request, parser), parser)

    def _get_acq_operation(self, key_min: Key, key_max: Key) -> Operation[ResponseAcq] | None:
        try:
            request = encode_get_acq(key_min, key_max)
        except (struct.error, TypeError):
            return None
        return get_acq_operation(request)
