"""Client side of the TStorage protocol, sans I/O: request encoders and response parsers.

Nothing here touches a socket. Requests are bytes (``encode_get``, ``encode_get_acq``) or an
iterator of byte chunks (``encode_put``: a huge put streams with bounded memory). Responses
are parsed incrementally: ``feed(data)`` what arrived (``feed_eof()`` when the peer closed),
then call ``next_event()`` until it returns ``NEED_DATA``. Events:

- ``NEED_DATA``: feed more bytes;
- ``RecordsBatch`` (GET only): records decoded from what was fed, at most ``memory_limit``
  wire bytes per batch;
- a ``Response`` (``ResponseAcq`` for GET/GET_ACQ, ``ResponsePut`` for PUT/PUTA): the final
  outcome; ``next_event()`` keeps returning it.

``GetIntoParser`` is the in-place variant for codecs whose records keep their wire layout
(numpy): instead of being fed bytes, it lends the buffer to receive into (``read_into()``,
then ``received(count)``), so a whole GET lands in one growing buffer and its records are
handed out as one array over it, without a copy.

Outcomes are statuses (see ``tstorage_client.response``): a refused GET is BAD_REQUEST, an
error after records is ERROR, a peer that closes early is DISCONNECTED, malformed data is
UNPARSEABLE_ENTITY and more data than allowed is NO_MEMORY. The parsers check every size
field before waiting for the bytes it announces, so a hostile peer cannot make them buffer
more than one record (itself bounded by ``memory_limit`` and the 32 MiB payload limit) plus
what was fed.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple, Protocol

from tstorage_client.protocol import wire
from tstorage_client.protocol._codec import ReadBuffer, RecordsCodec, UnparseableRecord
from tstorage_client.record import Key
from tstorage_client.records_set import RecordsSet
from tstorage_client.response import ResponseAcq, ResponsePut, ResponseStatus

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MEMORY_LIMIT",
    "NEED_DATA",
    "AcqResponseParser",
    "GetIntoParser",
    "GetResponseParser",
    "InPlaceCodec",
    "NeedData",
    "PutResponseParser",
    "ReadInto",
    "RecordsBatch",
    "encode_get",
    "encode_get_acq",
    "encode_put",
]

DEFAULT_MAX_BATCH_SIZE: Final = 1 << 20
"""Default upper bound (bytes) of one per-cid batch of a put."""

DEFAULT_MEMORY_LIMIT: Final = None
"""Default upper bound (wire bytes of records) of what one GET may hold: None, no limit."""

_MIN_RECORD = wire.KEY_SIZE
_MAX_RECORD = wire.KEY_SIZE + wire.MAX_PAYLOAD
_FIRST_RUN = 64  # records decoded by the first run; grows while records keep one size


class NeedData:
    """The type of ``NEED_DATA``: the parser needs more bytes (or ``feed_eof``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class RecordsBatch(NamedTuple):
    """Records decoded from a GET response, and their size on the wire (4 + n each)."""

    records: RecordsSet[Any]
    nbytes: int


class ReadInto(NamedTuple):
    """Instruction of an in-place read: receive into ``buffer``, answer the count (0: EOF)."""

    buffer: memoryview


# ------------------------------------------------------------------------------- requests


def _encode_range(request: wire.RequestType, key_min: Key, key_max: Key) -> bytes:
    """header + keyMin + keyMax; raises struct.error if a key is outside the wire ranges."""
    return wire.HEADER.pack(request, wire.GET_RANGE_STRUCT.size) + wire.GET_RANGE_STRUCT.pack(
        *key_min, *key_max
    )


def encode_get(key_min: Key, key_max: Key) -> bytes:
    """The GET request for the box ``key_min <= key < key_max``."""
    return _encode_range(wire.RequestType.GET, key_min, key_max)


def encode_get_acq(key_min: Key, key_max: Key) -> bytes:
    """The GET_ACQ request for the box ``key_min <= key < key_max``."""
    return _encode_range(wire.RequestType.GET_ACQ, key_min, key_max)


def encode_put(
    codec: RecordsCodec,
    records: Any,
    *,
    with_acq: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    skip_invalid: bool = False,
) -> Iterator[bytes | bytearray | memoryview]:
    """The PUT (or PUTA with ``with_acq``) request as byte chunks of bounded size.

    Records are grouped into per-cid batches of at most ``max_batch_size`` bytes (at least
    one record each). A record with an invalid key ends the stream there (the records before
    it are sent) unless ``skip_invalid``, which drops it instead.
    """
    if not 0 < max_batch_size < 2**31:
        raise ValueError(f"max_batch_size must be in 1 .. 2**31-1, got {max_batch_size}")
    request = wire.RequestType.PUTA if with_acq else wire.RequestType.PUT
    body = codec.encode_put_body(
        records, with_acq=with_acq, max_batch_size=max_batch_size, skip_invalid=skip_invalid
    )
    return _put_chunks(wire.HEADER.pack(request, 0), body)


def _put_chunks(
    head: bytes, body: Iterator[bytes | bytearray | memoryview]
) -> Iterator[bytes | bytearray | memoryview]:
    first = next(body, b"")
    if len(first) < _JOIN_BELOW:
        # The header rides with the first chunk: one write fewer for small puts.
        yield head + first
    else:  # a large chunk (maybe a view of an array) is not copied for 12 bytes
        yield head
        yield first
    yield from body
    yield wire.END_GUARD


_JOIN_BELOW = 64 << 10


# ------------------------------------------------------------------------------ responses


class _ByteQueue:
    """Received bytes not parsed yet, without copying whole reads.

    Reads wait in ``pending``; the parser works on ``buf`` from ``pos``. When ``buf`` is used
    up the next read becomes ``buf`` as it is (a memoryview, no copy); only a record that
    straddles two reads is copied, and only its own bytes.
    """

    __slots__ = ("buf", "pending", "pos")

    def __init__(self) -> None:
        self.buf: bytes | memoryview = b""
        self.pos = 0
        self.pending: deque[memoryview] = deque()

    def feed(self, data: bytes) -> None:
        if data:
            self.pending.append(memoryview(data))

    def available(self) -> int:
        return len(self.buf) - self.pos

    def have(self, total: int) -> bool:
        """Make ``total`` bytes contiguous at ``buf[pos:]`` if they have arrived."""
        pending = self.pending
        while True:
            available = len(self.buf) - self.pos
            if available >= total:
                return True
            if not pending:
                return False
            if available == 0:
                self.buf, self.pos = pending.popleft(), 0
                continue
            head = pending[0]
            need = total - available
            if len(head) <= need:
                pending.popleft()
            else:
                pending[0], head = head[need:], head[:need]
            self.buf, self.pos = bytes(self.buf[self.pos :]) + head, 0


class _ResponseParser:
    """Shared mechanics: byte queue, end of input, the final response."""

    def __init__(self) -> None:
        self._queue = _ByteQueue()
        self._eof = False
        self._final: Any = None

    def feed(self, data: bytes) -> None:
        """Add received bytes (b'' is ignored; use ``feed_eof`` for end of input)."""
        self._queue.feed(data)

    def feed_eof(self) -> None:
        """The peer closed the connection: pending requests end as DISCONNECTED."""
        self._eof = True

    @property
    def done(self) -> bool:
        """True once the final response is known."""
        return self._final is not None

    def _need(self, total: int) -> NeedData | Any:
        """Wait for ``total`` bytes from the current position (or fail when input ended)."""
        if self._eof:
            return self._fail(ResponseStatus.DISCONNECTED)
        return NEED_DATA

    def _fail(self, status: ResponseStatus) -> Any:
        raise NotImplementedError

    def _have(self, total: int) -> bool:
        return self._queue.have(total)


class _FixedResponseParser(_ResponseParser):
    """A response of one header and a fixed-size body (PUT/PUTA, GET_ACQ)."""

    def __init__(self, body: struct.Struct, build: Callable[..., Any]) -> None:
        super().__init__()
        self._body = body
        self._build = build
        self._failure = build  # called with only a status
        self._header: tuple[int, int] | None = None

    def next_event(self) -> Any:
        """NEED_DATA or the final response."""
        if self._final is not None:
            return self._final
        queue = self._queue
        if self._header is None:
            if not self._have(wire.HEADER_SIZE):
                return self._need(wire.HEADER_SIZE)
            self._header = status, size = wire.HEADER.unpack_from(queue.buf, queue.pos)
            queue.pos += wire.HEADER_SIZE
            if status != 0:
                return self._fail(ResponseStatus.ERROR)
            if size != self._body.size:
                return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
        if not self._have(self._body.size):
            return self._need(self._body.size)
        values = self._body.unpack_from(queue.buf, queue.pos)
        queue.pos += self._body.size
        self._final = self._build(ResponseStatus.OK, *values)
        return self._final

    def _fail(self, status: ResponseStatus) -> Any:
        self._final = self._failure(status)
        return self._final


class PutResponseParser(_FixedResponseParser):
    """Parses the answer to PUT/PUTA into a ``ResponsePut``."""

    def __init__(self) -> None:
        super().__init__(wire.ACQ_RANGE_STRUCT, ResponsePut)


class AcqResponseParser(_FixedResponseParser):
    """Parses the answer to GET_ACQ into a ``ResponseAcq``."""

    def __init__(self) -> None:
        super().__init__(wire.ACQ_STRUCT, ResponseAcq)


_HEAD, _RECORDS, _TAIL, _TAIL_ACQ = range(4)


class GetResponseParser(_ResponseParser):
    """Incremental parser of a GET response: batches of records, then a ``ResponseAcq``.

    Each batch holds at most ``memory_limit`` wire bytes; a single record larger than that
    ends the response with NO_MEMORY. With ``batch_per_read`` a batch is handed out as soon
    as the fed bytes are decoded (streaming); without, batches fill up to the limit. With
    ``discard`` set (e.g. draining an abandoned iteration) records are skipped without being
    decoded and no batches are produced.
    """

    def __init__(
        self,
        codec: RecordsCodec,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        batch_per_read: bool = True,
    ) -> None:
        super().__init__()
        self.codec = codec
        self.memory_limit = memory_limit
        self._limit = sys.maxsize if memory_limit is None else memory_limit
        # False: batches only fill up to memory_limit (get() keeps all, so it wants one).
        self.batch_per_read = batch_per_read
        self.discard = False
        self._state = _HEAD
        self._pieces: list[Any] = []
        self._batch_bytes = 0
        self._run = _FIRST_RUN
        self._skippers: dict[int, struct.Struct] = {}

    def next_event(self) -> NeedData | RecordsBatch | ResponseAcq:
        """The next event: NEED_DATA, a RecordsBatch, or the final ResponseAcq."""
        if self._final is not None:
            final: ResponseAcq = self._final
            return final
        queue = self._queue
        if self._state == _HEAD:
            if not self._have(wire.HEADER_SIZE):
                return self._need(wire.HEADER_SIZE)
            status, size = wire.HEADER.unpack_from(queue.buf, queue.pos)
            queue.pos += wire.HEADER_SIZE
            if status != 0:
                return self._fail(ResponseStatus.BAD_REQUEST)
            if size != 0:
                return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
            self._state = _RECORDS
        if self._state == _RECORDS:
            event = self._parse_records()
            if event is not None:
                return event
        if self._state == _TAIL:
            if not self._have(wire.HEADER_SIZE):
                return self._need(wire.HEADER_SIZE)
            status, size = wire.HEADER.unpack_from(queue.buf, queue.pos)
            queue.pos += wire.HEADER_SIZE
            if status != 0:
                return self._fail(ResponseStatus.ERROR)
            if size != wire.ACQ_STRUCT.size:
                return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
            self._state = _TAIL_ACQ
        if not self._have(wire.ACQ_STRUCT.size):
            return self._need(wire.ACQ_STRUCT.size)
        (acq,) = wire.ACQ_STRUCT.unpack_from(queue.buf, queue.pos)
        queue.pos += wire.ACQ_STRUCT.size
        final = self._final = ResponseAcq(ResponseStatus.OK, acq)
        return final

    def _fail(self, status: ResponseStatus) -> ResponseAcq:
        final = self._final = ResponseAcq(status)
        return final

    def take_partial(self) -> RecordsSet[Any] | None:
        """After a failure: the records decoded but not handed out in a batch, if any."""
        if not self._pieces:
            return None
        return self._take_batch().records

    def _take_batch(self) -> RecordsBatch:
        batch = RecordsBatch(self.codec.join(self._pieces), self._batch_bytes)
        self._pieces = []
        self._batch_bytes = 0
        return batch

    def _parse_records(self) -> NeedData | RecordsBatch | ResponseAcq | None:
        """Decode what is buffered; None when the terminator was reached and nothing is pending."""
        queue = self._queue
        limit = self._limit
        unpack_n = wire.INT32.unpack_from
        # Building millions of tuples would trigger the cyclic GC over and over although
        # none of them can form a cycle: pause it while decoding (2-3x faster).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while True:
                buf, pos = queue.buf, queue.pos
                avail = len(buf) - pos
                if avail < 4:
                    if self._pieces and self.batch_per_read:
                        return self._take_batch()
                    if not self._have(4):
                        return self._need(4)
                    continue
                (n,) = unpack_n(buf, pos)
                if n == 0:
                    queue.pos = pos + 4
                    self._state = _TAIL
                    return self._take_batch() if self._pieces else None
                if n < _MIN_RECORD or n > _MAX_RECORD:
                    return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
                size = n + 4
                if size > limit:
                    return self._fail(ResponseStatus.NO_MEMORY)
                if avail < size:
                    if self._pieces and self.batch_per_read:
                        return self._take_batch()
                    if not self._have(size):
                        return self._need(size)
                    continue
                room = limit - self._batch_bytes
                if room < size:
                    return self._take_batch()
                count = min(avail // size, room // size, self._run)
                if self.discard:
                    decoded = self._skip_run(buf, pos, n, count)
                else:
                    try:
                        piece, decoded = self.codec.decode_run(buf, pos, n, count)
                    except UnparseableRecord:
                        return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
                    self._pieces.append(piece)
                    self._batch_bytes += decoded * size
                self._run = self._run * 2 if decoded == count else max(8, 2 * decoded)
                queue.pos = pos + decoded * size
        finally:
            if gc_was_enabled:
                gc.enable()

    def _skip_run(self, buf: ReadBuffer, pos: int, n: int, count: int) -> int:
        """Count the records of size 4 + n at pos (up to count) without decoding them."""
        skipper = self._skippers.get(n)
        if skipper is None:
            if len(self._skippers) > 64:
                self._skippers.clear()
            skipper = self._skippers[n] = struct.Struct(f"<i{n}x")
        with memoryview(buf) as view:
            lengths = [
                row[0] for row in skipper.iter_unpack(view[pos : pos + count * skipper.size])
            ]
        decoded = 0
        for length in lengths:
            if length != n:
                break
            decoded += 1
        return decoded


# ------------------------------------------------------------------ GET received in place


class InPlaceCodec(Protocol):
    """A records codec whose GET records keep their wire layout (``GetIntoParser``)."""

    def count_run(self, buf: ReadBuffer | mmap.mmap, pos: int, n: int, count: int) -> int:
        """How many of ``count`` records of size 4 + n at ``pos`` are whole records of its
        layout (at least 1); raises UnparseableRecord when ``n`` is not its record size."""
        ...

    def view_records(self, buffer: Any, offset: int, count: int) -> Any:
        """The ``count`` records at ``offset`` of ``buffer`` as one batch (no copy)."""
        ...

    def get_data(self, batches: list[Any]) -> Any:
        """``ResponseGet.data`` of these batches."""
        ...


_ARENA_FIRST = 256 << 10  # the first buffer of a GET; it grows 4x when full
_ARENA_HUGE = 2 << 20  # buffers from this size ask for transparent huge pages
_READ_ROOM = 64 << 10  # room ensured before each read
_READ_MAX = 1 << 20  # at most this per read: its record check runs while it is in cache
_KEEP_MAPPED = 1 << 20  # record bytes below this are copied out (exact, small result)
_MAP_PRIVATE = getattr(mmap, "MAP_PRIVATE", None)
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


class _Arena:
    """A growing receive buffer: anonymous memory, resized in place (``mremap``) when it fills.

    Fresh memory costs a page fault per page when first written (2 us each on this class of
    VM, more than the copy itself), so large buffers ask for 2 MiB pages. Growing does not
    copy what was received where the platform can resize a mapping; elsewhere it copies once.
    """

    __slots__ = ("end", "mem")

    def __init__(self) -> None:
        self.mem = self._map(_ARENA_FIRST)
        self.end = 0

    @staticmethod
    def _map(size: int) -> mmap.mmap:
        if _MAP_PRIVATE is None:  # pragma: no cover - Windows
            return mmap.mmap(-1, size)
        return mmap.mmap(-1, size, flags=_MAP_PRIVATE)

    def room(self) -> memoryview:
        """A view of the free tail, at most ``_READ_MAX`` (release it before the next call)."""
        mem = self.mem
        if len(mem) - self.end < _READ_ROOM:
            size = max(4 * len(mem), self.end + _READ_ROOM)
            try:
                mem.resize(size)
            except (BufferError, OSError, SystemError):  # no mremap here: copy once
                grown = self._map(size)
                grown[: self.end] = mem[: self.end]
                mem.close()
                mem = self.mem = grown
            if size >= _ARENA_HUGE and _MADV_HUGEPAGE is not None:
                with contextlib.suppress(OSError):  # no THP in this kernel
                    mem.madvise(_MADV_HUGEPAGE)
        return memoryview(mem)[self.end : self.end + _READ_MAX]

    def take(self, start: int, stop: int) -> tuple[mmap.mmap | bytearray, int]:
        """The buffer holding bytes ``start:stop`` and their offset in it; the arena is done.

        A small result is copied into an exact bytearray (a mapping is at least a page); a
        large one keeps the mapping, cut down to ``stop``."""
        mem = self.mem
        if stop - start < _KEEP_MAPPED:
            with memoryview(mem) as view:
                data = bytearray(view[start:stop])
            mem.close()
            return data, 0
        with contextlib.suppress(BufferError, OSError, SystemError):  # no mremap: keep it all
            mem.resize(stop)
        return mem, start


class GetIntoParser:
    """A GET response held whole and received in place; the records become one batch.

    For ``get()`` without a ``memory_limit`` on an ``InPlaceCodec``: the response arrives
    in one ``_Arena`` (``read_into()`` lends its free tail; ``received(count)`` says what
    came, 0 for end of input), its records are checked where they landed, and ``data()``
    views them as one batch. Outcomes are those of ``GetResponseParser``: each record is
    checked in the same order (terminator, size range, whole record, the codec's size), so
    BAD_REQUEST, ERROR, DISCONNECTED and UNPARSEABLE_ENTITY come at the same points and
    ``data()`` holds the same records.
    """

    def __init__(self, codec: InPlaceCodec) -> None:
        self.codec = codec
        self._arena = _Arena()
        self._view: memoryview | None = None
        self._pos = 0
        self._records_at = 0
        self._count = 0
        self._state = _HEAD
        self._eof = False
        self._final: ResponseAcq | None = None

    def read_into(self) -> ReadInto:
        """The instruction to receive into the free tail of the buffer."""
        self._view = self._arena.room()
        return ReadInto(self._view)

    def received(self, count: int) -> None:
        """``count`` bytes arrived in the lent buffer (0: the input ended)."""
        if self._view is not None:
            self._view.release()
            self._view = None
        if count:
            self._arena.end += count
        else:
            self._eof = True

    def data(self) -> Any:
        """The records read (all, or those before a failure) as ``ResponseGet.data``."""
        if not self._count:
            return self.codec.get_data([])
        start = self._records_at
        buffer, offset = self._arena.take(start, start + self._size * self._count)
        return self.codec.get_data([self.codec.view_records(buffer, offset, self._count)])

    def _fail(self, status: ResponseStatus) -> ResponseAcq:
        final = self._final = ResponseAcq(status)
        return final

    def _need(self) -> NeedData | ResponseAcq:
        return self._fail(ResponseStatus.DISCONNECTED) if self._eof else NEED_DATA

    def next_event(self) -> NeedData | ResponseAcq:
        """NEED_DATA (``read_into`` next) or the final ResponseAcq."""
        if self._final is not None:
            return self._final
        mem, end = self._arena.mem, self._arena.end
        if self._state == _HEAD:
            event = self._header(mem, end, ResponseStatus.BAD_REQUEST, 0)
            if event is not None:
                return event
            self._state = _RECORDS
            self._records_at = self._pos
        if self._state == _RECORDS:
            event = self._records(mem, end)
            if event is not None:
                return event
        if self._state == _TAIL:
            event = self._header(mem, end, ResponseStatus.ERROR, wire.ACQ_STRUCT.size)
            if event is not None:
                return event
            self._state = _TAIL_ACQ
        if end - self._pos < wire.ACQ_STRUCT.size:
            return self._need()
        (acq,) = wire.ACQ_STRUCT.unpack_from(mem, self._pos)
        self._pos += wire.ACQ_STRUCT.size
        final = self._final = ResponseAcq(ResponseStatus.OK, acq)
        return final

    _size = 0  # 4 + n of the records accepted

    def _header(
        self, mem: mmap.mmap, end: int, refused: ResponseStatus, body_size: int
    ) -> NeedData | ResponseAcq | None:
        """Take the header at the position: None when it is OK and announces ``body_size``."""
        if end - self._pos < wire.HEADER_SIZE:
            return self._need()
        status, size = wire.HEADER.unpack_from(mem, self._pos)
        self._pos += wire.HEADER_SIZE
        if status != 0:
            return self._fail(refused)
        if size != body_size:
            return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
        return None

    def _records(self, mem: mmap.mmap, end: int) -> NeedData | ResponseAcq | None:
        """Check what arrived; None once the terminator is passed."""
        unpack_n = wire.INT32.unpack_from
        while True:
            pos = self._pos
            avail = end - pos
            if avail < 4:
                return self._need()
            (n,) = unpack_n(mem, pos)
            if n == 0:
                self._pos = pos + 4
                self._state = _TAIL
                return None
            if n < _MIN_RECORD or n > _MAX_RECORD:
                return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
            size = n + 4
            if avail < size:
                return self._need()
            try:
                count = self.codec.count_run(mem, pos, n, avail // size)
            except UnparseableRecord:
                return self._fail(ResponseStatus.UNPARSEABLE_ENTITY)
            self._size = size
            self._count += count
            self._pos = pos + count * size
