"""Server side of the sans-I/O protocol core: an incremental request parser and response encoders.

:class:`RequestParser` is fed bytes (``receive_data``) and hands out events (``next_event``),
in the style of h11: it never touches a socket. A server reads a chunk, feeds it, and consumes
events until :data:`NEED_DATA`, so the parser never holds more than one unfinished record plus
one read chunk. Every size announced on the wire is checked *before* bytes are buffered for it:

* a GET / GET_ACQ header must announce exactly 64 bytes, a PUT / PUTA header 0;
* a record's ``n`` must lie in ``[key size, key size + 32 MiB]``;
* records must add up exactly to their batch's ``batch_bytes``;
* end of input inside a request is a truncated stream.

Events: :class:`GetRequest`, :class:`GetAcqRequest`; for writes :class:`PutStart`, then
:class:`PutBatch` (PUT) or :class:`PutaBatch` (PUTA) chunks of at most ``MAX_ROWS_PER_EVENT``
rows, then :class:`PutEnd`; :class:`ConnectionClosed` at a clean end of input. Runs of records
with one size are handed out still in wire form, as one :class:`RecordRun` (writers mostly send
fixed-size payloads): checking and copying a run costs a few nanoseconds per record, and the
storage converts it in bulk; other records come as decoded row tuples.

Any violation yields one :class:`ProtocolError`; after it the parser stays failed (the
connection must answer with :func:`encode_error` and close). Well-formed records before the
fault may already have been handed out: the server discards the whole request.

The encoder functions build the server's responses byte for byte as the protocol doc states.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from tstorage_client.protocol.wire import (
    ACQ_RANGE_STRUCT,
    ACQ_STRUCT,
    BATCH_HEADER,
    GET_RANGE_STRUCT,
    HEADER,
    HEADER_SIZE,
    INT32,
    KEY_SIZE,
    MAX_PAYLOAD,
    PUT_KEY,
    PUTA_KEY,
    RequestType,
)
from tstorage_client.record import Key

__all__ = [
    "NEED_DATA",
    "PUTA_TO_GET_N",
    "PUT_TO_GET_N",
    "RECORD_HEAD",
    "ConnectionClosed",
    "GetAcqRequest",
    "GetRequest",
    "NeedData",
    "ProtocolError",
    "PutBatch",
    "PutEnd",
    "PutRow",
    "PutStart",
    "PutaBatch",
    "PutaRow",
    "RecordRun",
    "RequestEvent",
    "RequestParser",
    "encode_acq",
    "encode_error",
    "encode_get_end",
    "encode_get_failed_end",
    "encode_get_header",
    "encode_put_ok",
    "encode_records",
]

PutRow = tuple[int, int, int, int, bytes]
"""One record of a PUT batch: ``(n, mid, moid, cap, payload)`` (``n`` as on the wire)."""

PutaRow = tuple[int, int, int, int, int, bytes]
"""One record of a PUTA batch: ``(n, mid, moid, cap, acq, payload)`` (``n`` as on the wire)."""

_PUT_KEY_SIZE = PUT_KEY.size  # 20
_PUTA_KEY_SIZE = PUTA_KEY.size  # 28


class RecordRun:
    """Records of one batch that all have the same size, still in wire form.

    ``data`` holds ``count`` records of ``n + 4`` bytes each (``int32 n``, the PUT or PUTA key,
    the payload). A storage can turn such a run into its own layout with a few C-level copies
    instead of one Python object per record; iterating yields the decoded rows (``PutRow``
    or ``PutaRow`` tuples), for consumers that want them one by one.
    """

    __slots__ = ("count", "data", "n", "with_acq")

    def __init__(self, data: bytes, n: int, with_acq: bool) -> None:
        self.data = data
        self.n = n
        self.with_acq = with_acq
        self.count = len(data) // (n + 4)

    @property
    def key_size(self) -> int:
        """Bytes of the wire key after ``n``: 20 for PUT, 28 for PUTA."""
        return _PUTA_KEY_SIZE if self.with_acq else _PUT_KEY_SIZE

    @property
    def payload_size(self) -> int:
        """Payload bytes of every record of the run."""
        return self.n - self.key_size

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        key_format = "qiqq" if self.with_acq else "qiq"
        return struct.iter_unpack(f"<i{key_format}{self.payload_size}s", self.data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RecordRun):
            return (self.data, self.n, self.with_acq) == (other.data, other.n, other.with_acq)
        if isinstance(other, list):
            return list(self) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecordRun(count={self.count}, n={self.n}, with_acq={self.with_acq})"


@dataclass(frozen=True, slots=True)
class GetRequest:
    """A GET: stream the records in the box ``key_min <= key < key_max``."""

    key_min: Key
    key_max: Key


@dataclass(frozen=True, slots=True)
class GetAcqRequest:
    """A GET_ACQ: report the acq up to which the box is stable."""

    key_min: Key
    key_max: Key


@dataclass(frozen=True, slots=True)
class PutStart:
    """A PUT (``with_acq=False``) or PUTA (``with_acq=True``) request begins."""

    with_acq: bool


@dataclass(frozen=True, slots=True)
class PutBatch:
    """PUT records of one cid, as far as they have arrived (one wire batch may give several)."""

    cid: int
    rows: list[PutRow] | RecordRun


@dataclass(frozen=True, slots=True)
class PutaBatch:
    """PUTA records of one cid, as far as they have arrived (one wire batch may give several)."""

    cid: int
    rows: list[PutaRow] | RecordRun


@dataclass(frozen=True, slots=True)
class PutEnd:
    """The PUT / PUTA stream ended with its end guard; the request is complete."""


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The request is malformed; answer with an error header and close the connection."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection cleanly, between requests."""


class NeedData:
    """Sentinel type: feed more bytes before the next event can be produced."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

RequestEvent = (
    GetRequest
    | GetAcqRequest
    | PutStart
    | PutBatch
    | PutaBatch
    | PutEnd
    | ProtocolError
    | ConnectionClosed
    | NeedData
)

# Parser states.
_HEADER, _BATCH_HEAD, _RECORDS, _FAILED, _CLOSED = range(5)

_RANGE_SIZE = GET_RANGE_STRUCT.size  # 64

# Largest number of rows handed out in one PutBatch: keeps each storage step small and bounded.
MAX_ROWS_PER_EVENT = 8192

_int32_from = INT32.unpack_from
_put_key_from = PUT_KEY.unpack_from
_puta_key_from = PUTA_KEY.unpack_from


class RequestParser:
    """Incremental parser of the requests arriving on one connection.

    Feed bytes with :meth:`receive_data` (``b""`` means end of input), then call
    :meth:`next_event` until it returns :data:`NEED_DATA`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._state = _HEADER
        self._eof = False
        self._with_acq = False
        self._cid = 0
        self._batch_left = 0
        self._error: ProtocolError | None = None

    @property
    def in_request(self) -> bool:
        """True while a request has started but not been fully parsed."""
        return self._state in (_BATCH_HEAD, _RECORDS) or (
            self._state == _HEADER and len(self._buf) > self._pos
        )

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed (bounded by one record plus one read chunk)."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Append received bytes; ``b""`` signals that the peer will send nothing more."""
        if not data:
            self._eof = True
            return
        if self._state in (_FAILED, _CLOSED):
            return  # nothing more will be parsed: keep no bytes
        if self._pos:
            # Drop consumed bytes before appending so the buffer never grows by what was parsed.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> RequestEvent:
        """The next event, or :data:`NEED_DATA` when more bytes are needed."""
        while True:
            state = self._state
            event: RequestEvent | None
            if state == _RECORDS:
                event = self._records()
            elif state == _BATCH_HEAD:
                event = self._batch_head()
            elif state == _HEADER:
                return self._header()
            elif state == _FAILED:
                assert self._error is not None
                return self._error
            else:
                return ConnectionClosed()
            # None: the state advanced without an event (a batch head, an empty batch); go on.
            if event is not None:
                return event

    def _fail(self, reason: str) -> ProtocolError:
        self._state = _FAILED
        self._error = ProtocolError(reason)
        # Nothing more will be parsed: release the buffer at once.
        self._buf = bytearray()
        self._pos = 0
        return self._error

    def _need(self, count: int) -> bool:
        """True when ``count`` unconsumed bytes are buffered."""
        return len(self._buf) - self._pos >= count

    def _starved(self) -> RequestEvent:
        """What to answer when a request is incomplete: wait, or fail when input has ended."""
        if self._eof:
            return self._fail("truncated request: connection closed mid-request")
        return NEED_DATA

    def _header(self) -> RequestEvent:
        if not self._need(HEADER_SIZE):
            if self._eof and self._pos == len(self._buf):
                self._state = _CLOSED
                return ConnectionClosed()
            return self._starved()
        rtype, size = HEADER.unpack_from(self._buf, self._pos)
        if rtype in (RequestType.GET, RequestType.GET_ACQ):
            if size != _RANGE_SIZE:
                return self._fail(f"request type {rtype} announces {size} bytes, expected 64")
            if not self._need(HEADER_SIZE + _RANGE_SIZE):
                return self._starved()
            values = GET_RANGE_STRUCT.unpack_from(self._buf, self._pos + HEADER_SIZE)
            self._pos += HEADER_SIZE + _RANGE_SIZE
            key_min = Key._make(values[:5])
            key_max = Key._make(values[5:])
            if rtype == RequestType.GET:
                return GetRequest(key_min, key_max)
            return GetAcqRequest(key_min, key_max)
        if rtype in (RequestType.PUT, RequestType.PUTA):
            if size != 0:
                return self._fail(f"request type {rtype} announces {size} bytes, expected 0")
            self._pos += HEADER_SIZE
            self._with_acq = rtype == RequestType.PUTA
            self._state = _BATCH_HEAD
            return PutStart(self._with_acq)
        return self._fail(f"unknown request type {rtype}")

    def _batch_head(self) -> RequestEvent | None:
        if not self._need(4):
            return self._starved()
        (cid,) = _int32_from(self._buf, self._pos)
        if cid < 0:
            self._pos += 4
            self._state = _HEADER
            return PutEnd()
        if not self._need(BATCH_HEADER.size):
            return self._starved()
        (batch_bytes,) = _int32_from(self._buf, self._pos + 4)
        if batch_bytes < 0:
            return self._fail(f"negative batch_bytes {batch_bytes}")
        self._pos += BATCH_HEADER.size
        self._cid = cid
        self._batch_left = batch_bytes
        self._state = _RECORDS
        return None

    def _records(self) -> RequestEvent | None:
        """Parse as many whole records of the current batch as are buffered."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        left = self._batch_left
        with_acq = self._with_acq
        key_size = _PUTA_KEY_SIZE if with_acq else _PUT_KEY_SIZE
        max_n = key_size + MAX_PAYLOAD
        if end - pos >= 4:
            (n,) = _int32_from(buf, pos)
            if key_size <= n <= max_n:
                run = self._uniform_run(n, pos, min(end - pos, left))
                if run is not None:
                    self._pos = pos + len(run.data)
                    self._batch_left = left = left - len(run.data)
                    if left == 0:
                        self._state = _BATCH_HEAD
                    return PutaBatch(self._cid, run) if with_acq else PutBatch(self._cid, run)
        # General path: records of differing sizes, one at a time.
        rows: list[Any] = []
        error: str | None = None
        append = rows.append
        while left > 0 and len(rows) < MAX_ROWS_PER_EVENT:
            if end - pos < 4:
                break
            (n,) = _int32_from(buf, pos)
            if n < key_size or n > max_n:
                error = f"record size {n} outside [{key_size}, {max_n}]"
                break
            if n + 4 > left:
                error = f"record of {n + 4} bytes overruns its batch ({left} bytes left)"
                break
            if end - pos < n + 4:
                break
            start = pos + 4
            pos = start + n
            payload = bytes(buf[start + key_size : pos])
            if with_acq:
                append((n, *_puta_key_from(buf, start), payload))
            else:
                append((n, *_put_key_from(buf, start), payload))
            left -= n + 4
        self._pos = pos
        self._batch_left = left
        if error is not None and not rows:
            return self._fail(error)
        if left == 0:
            self._state = _BATCH_HEAD
        if rows:
            # A detected error is reported on the next call: these rows are still well formed.
            if with_acq:
                return PutaBatch(self._cid, rows)
            return PutBatch(self._cid, rows)
        if left == 0:
            return None
        return self._starved()

    def _uniform_run(self, n: int, pos: int, available: int) -> RecordRun | None:
        """Fast path: the buffered records from ``pos`` on as one run, if they all have size ``n``.

        Writers usually send fixed-size payloads, so a batch is mostly one record layout. The
        run is copied out in one piece and its ``n`` fields are checked with four strided
        byte counts, all at C speed. None when fewer than two records fit or sizes differ
        (the general path then takes over and reports any error).
        """
        size = n + 4
        count = min(available // size, MAX_ROWS_PER_EVENT)
        if count < 2:
            return None
        with memoryview(self._buf) as view, view[pos : pos + count * size] as span:
            data = bytes(span)
        # Every record of the run must announce the same n, or the run is not what it seemed.
        for offset, byte in enumerate(data[:4]):
            if data[offset::size].count(byte) != count:
                return None
        return RecordRun(data, n, self._with_acq)


_OK_EMPTY = HEADER.pack(0, 0)
_ERROR = HEADER.pack(-1, 0)
_TERMINATOR = INT32.pack(0)
_ACQ_HEADER = HEADER.pack(0, ACQ_STRUCT.size)
_PUT_OK_HEADER = HEADER.pack(0, ACQ_RANGE_STRUCT.size)
RECORD_HEAD = struct.Struct("<iiqiqq")
"""Head of a GET record frame: n, cid, mid, moid, cap, acq; the payload follows."""
PUT_TO_GET_N = KEY_SIZE - _PUT_KEY_SIZE
"""Add to a PUT record's wire n to get its GET frame's n (the frame carries cid and acq)."""
PUTA_TO_GET_N = KEY_SIZE - _PUTA_KEY_SIZE
"""Add to a PUTA record's wire n to get its GET frame's n (the frame carries cid)."""
_record_head = RECORD_HEAD.pack


def encode_error() -> bytes:
    """Error header (status -1, size 0): a refused request; the connection closes after it."""
    return _ERROR


def encode_get_header() -> bytes:
    """The first header of a successful GET (status 0, size 0); records follow."""
    return _OK_EMPTY


def encode_records(records: Iterable[tuple[int, int, int, int, int, bytes]]) -> bytes:
    """GET record frames for ``(cid, mid, moid, cap, acq, payload)`` rows."""
    return b"".join(
        [
            _record_head(KEY_SIZE + len(payload), cid, mid, moid, cap, acq) + payload
            for cid, mid, moid, cap, acq, payload in records
        ]
    )


def encode_get_end(acq: int) -> bytes:
    """End of a successful GET: terminator, then header(0, 8) and the range's acq."""
    return _TERMINATOR + _ACQ_HEADER + ACQ_STRUCT.pack(acq)


def encode_get_failed_end() -> bytes:
    """End of a GET that failed after its first header: terminator, then an error header."""
    return _TERMINATOR + _ERROR


def encode_acq(acq: int) -> bytes:
    """Successful GET_ACQ response: header(0, 8) and the acq."""
    return _ACQ_HEADER + ACQ_STRUCT.pack(acq)


def encode_put_ok(acq_min: int, acq_max: int) -> bytes:
    """Successful PUT / PUTA response: header(0, 16) and the assigned acq range."""
    return _PUT_OK_HEADER + ACQ_RANGE_STRUCT.pack(acq_min, acq_max)
