"""Requests as generators: put, get, get_stream/get_iter and get_acq, each written once.

An operation is a generator that tells the channel running it what to do next:

- it yields ``bytes``: send them, then resume it with ``None``;
- it yields ``NEED_DATA``: receive, then resume it with the data (``b""`` when the peer closed);
- it yields ``ReadInto(buffer)``: receive into the buffer, then resume it with the count
  (0 when the peer closed);
- it yields a ``RecordsBatch``: hand the records to the consumer (get_stream's callback,
  get_iter's loop), then resume it with ``None``.

It returns the final ``Response``. ``Channel`` (blocking sockets) and ``AsyncChannel``
(asyncio) only pump bytes through these; all protocol decisions live here and in
``tstorage_client.protocol.client``.
"""

from __future__ import annotations

import gc
from collections.abc import Generator, Iterable
from typing import Any, TypeVar

from tstorage_client.protocol.client import (
    NEED_DATA,
    AcqResponseParser,
    GetIntoParser,
    GetResponseParser,
    NeedData,
    PutResponseParser,
    ReadInto,
    RecordsBatch,
)
from tstorage_client.response import (
    Response,
    ResponseAcq,
    ResponseGet,
    ResponsePut,
    ResponseStatus,
)

__all__ = [
    "Instruction",
    "Operation",
    "get_acq_operation",
    "get_into_operation",
    "get_operation",
    "put_operation",
    "stream_operation",
]

R = TypeVar("R", bound=Response)

Instruction = bytes | bytearray | memoryview | NeedData | ReadInto | RecordsBatch
Reply = bytes | int | None
"""What the channel resumes an operation with: received bytes, a count, or None."""
Operation = Generator[Instruction, Reply, R]


def _until_final(
    parser: GetResponseParser | PutResponseParser | AcqResponseParser,
) -> Generator[Instruction, Reply, Any]:
    """Feed the parser until its final response; pass record batches up on the way."""
    while True:
        event = parser.next_event()
        if event is NEED_DATA:
            data = yield NEED_DATA
            assert not isinstance(data, int)
            if data:
                parser.feed(data)
            else:
                parser.feed_eof()
        elif type(event) is RecordsBatch:
            yield event
        else:
            return event


def put_operation(chunks: Iterable[bytes | bytearray | memoryview]) -> Operation[ResponsePut]:
    """PUT/PUTA: send the encoded chunks, then read the ResponsePut."""
    yield from chunks
    response: ResponsePut = yield from _until_final(PutResponseParser())
    return response


def get_acq_operation(request: bytes) -> Operation[ResponseAcq]:
    """GET_ACQ: send the request, read the ResponseAcq."""
    yield request
    response: ResponseAcq = yield from _until_final(AcqResponseParser())
    return response


def stream_operation(request: bytes, parser: GetResponseParser) -> Operation[ResponseAcq]:
    """GET consumed batch by batch (get_stream, get_iter): yields each RecordsBatch."""
    yield request
    response: ResponseAcq = yield from _until_final(parser)
    return response


_AGE_AFTER_BYTES = 1 << 20
"""Gets of at least this many record bytes (some 25 000 records) age the young generation.

Smaller ones leave the collector as it is: the collection they cause is short, and aging on
every small get would move a program's young cyclic garbage to the oldest generation again
and again (it is then freed only by a full collection)."""


def _age_young_objects() -> None:
    """Move every object the collector tracks to the oldest generation (records just read).

    The GC was paused while reading, so the young generation holds every record and its
    allocation count is far past the threshold: the first allocation after ``gc.enable()``
    would start a collection over all of them (and later ones would again, generation by
    generation, up to a full pass). ``gc.freeze()`` followed by ``gc.unfreeze()`` puts them
    in the oldest generation and resets the young count, in constant time; no collection is
    triggered by the read. A program that keeps objects frozen itself is left alone (its
    frozen set must not be thawed): then the collector runs as usual.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def get_operation(request: bytes, parser: GetResponseParser) -> Operation[ResponseGet[Any]]:
    """GET held whole (get): collects the batches; NO_MEMORY beyond parser.memory_limit.

    On failure the response's data holds the records read before it.

    The cyclic GC is paused until the response is complete: every record built is kept, and
    Key/Record tuples are never untracked by the collector, so each collection triggered on
    the way would traverse all records read so far (a third of the time of a large get).
    Afterwards the records join the oldest generation (see ``_age_young_objects``).
    """
    stream = stream_operation(request, parser)
    batches: list[Any] = []
    total = 0
    limit = parser.memory_limit
    reply: Reply = None
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while True:
            try:
                instruction = stream.send(reply)
            except StopIteration as stop:
                final: ResponseAcq = stop.value
                break
            if type(instruction) is RecordsBatch:
                total += instruction.nbytes
                if limit is not None and total > limit:
                    stream.close()
                    data = parser.codec.get_data(batches)
                    return ResponseGet(ResponseStatus.NO_MEMORY, -1, data)
                batches.append(instruction.records)
                reply = None
            else:
                reply = yield instruction
    finally:
        if gc_was_enabled:
            if total >= _AGE_AFTER_BYTES:
                _age_young_objects()
            gc.enable()
    if not final:
        partial = parser.take_partial()
        if partial is not None:
            batches.append(partial)
        return ResponseGet(final.status, -1, parser.codec.get_data(batches))
    return ResponseGet(ResponseStatus.OK, final.acq, parser.codec.get_data(batches))


def get_into_operation(request: bytes, parser: GetIntoParser) -> Operation[ResponseGet[Any]]:
    """GET held whole, received in place (``GetIntoParser``): one read-into per wait.

    On failure the response's data holds the records read before it, as with
    ``get_operation``.
    """
    yield request
    while (final := parser.next_event()) is NEED_DATA:
        count = yield parser.read_into()
        assert type(count) is int
        parser.received(count)
    assert isinstance(final, ResponseAcq)
    acq = final.acq if final else -1
    return ResponseGet(final.status, acq, parser.data())
