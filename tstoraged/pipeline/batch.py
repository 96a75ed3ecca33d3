"""The unit that moves from batcher to writer: a sealed :class:`Batch` of records.

A batch also carries the bookkeeping that makes acknowledgements correct: which source each
run of records came from, and the acks to fire, in emit order, once the batch is durable
(written, dead-lettered, or, with a spool, appended to it).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import structlog

from tstorage_client import timestamp
from tstorage_client.protocol.wire import BATCH_HEADER, HEADER_SIZE, INT32, PUT_KEY, PUTA_KEY
from tstorage_client.record import ACQ_MAX, ACQ_MIN, Record
from tstoraged.pipeline.settings import WriteMode
from tstoraged.source import Ack

__all__ = [
    "ACQ_UNSET",
    "CID_BATCH_OVERHEAD",
    "REQUEST_OVERHEAD",
    "AcqClock",
    "Batch",
    "assign_acq",
    "record_overhead",
    "records_wire_size",
]

log = structlog.get_logger("tstoraged.pipeline")

REQUEST_OVERHEAD = HEADER_SIZE + INT32.size
"""Bytes of a PUT/PUTA request besides its batches: the header and the end guard."""
CID_BATCH_OVERHEAD = BATCH_HEADER.size
"""Bytes of one per-cid batch header (cid, batch_bytes)."""

_payload_of = itemgetter(5)  # a record is the flat (cid, mid, moid, cap, acq, payload)


def record_overhead(write_mode: WriteMode) -> int:
    """Wire bytes of one record besides its payload: the length prefix and the key."""
    return INT32.size + (PUTA_KEY.size if write_mode == "puta" else PUT_KEY.size)


def records_wire_size(records: Sequence[Record[bytes]], overhead: int) -> int:
    """Wire bytes of the records themselves (no request or per-cid headers), at C speed.

    ``overhead`` is :func:`record_overhead` of the write mode.
    """
    return len(records) * overhead + sum(map(len, map(_payload_of, records)))


@dataclass(eq=False)
class Batch:
    """A sealed batch: records in order, their sources, and the acks it completes.

    ``segments`` are runs ``(source, count)`` in record order; ``acks`` are fired once, in
    order, by whichever stage makes the batch durable (:meth:`fire_acks`).
    """

    seq: int
    write_mode: WriteMode
    records: list[Record[bytes]]
    segments: list[tuple[str, int]]
    acks: list[Ack]
    nbytes: int
    """Estimated wire size of the whole request."""
    created: float
    """Monotonic time of the batch's first record or ack."""
    sealed: float
    """Monotonic time the batch was closed."""
    encoded: bytes | None = field(default=None, repr=False)
    """The batch as a ready PUT/PUTA request (a spool keeps batches so): the writer sends it as
    it is, and decodes ``records`` (:meth:`materialize`) only to handle records one by one."""
    encoded_count: int = 0
    """Number of records in ``encoded``."""
    decoder: Callable[[bytes], list[Record[bytes]]] | None = field(default=None, repr=False)
    """Turns ``encoded`` back into records."""
    _ends: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ends = list(itertools.accumulate(count for _, count in self.segments))

    def __len__(self) -> int:
        return self.encoded_count if self.encoded is not None else len(self.records)

    def materialize(self) -> None:
        """Decode ``encoded`` into ``records`` (for per-record handling such as splitting)."""
        if self.encoded is not None:
            if self.decoder is None:
                raise ValueError("an encoded batch needs a decoder")
            self.records = self.decoder(self.encoded)
            self.encoded = None

    def source_of(self, index: int) -> str:
        """The source that emitted record ``index``."""
        return self.segments[bisect.bisect_right(self._ends, index)][0]

    def source_counts(self, start: int = 0, end: int | None = None) -> dict[str, int]:
        """Records per source within ``records[start:end]``."""
        end = len(self) if end is None else end
        counts: dict[str, int] = {}
        seg_start = 0
        for (source, _), seg_end in zip(self.segments, self._ends, strict=True):
            overlap = min(end, seg_end) - max(start, seg_start)
            if overlap > 0:
                counts[source] = counts.get(source, 0) + overlap
            seg_start = seg_end
        return counts

    def fire_acks(self) -> int:
        """Call the batch's acks in order, once; returns how many were called.

        A failing ack is the source's bug: it is logged and must not stop delivery.
        """
        acks, self.acks = self.acks, []
        for ack in acks:
            try:
                ack()
            except Exception:
                log.exception("ack_failed", batch=self.seq)
        return len(acks)


class AcqClock:
    """Assigns acq values for ``puta``: TStorage ns from the wall clock, unique, never decreasing.

    ``floor`` is the largest acq handed out before (e.g. persisted by a spool), so values
    stay monotonic across restarts even when the wall clock stepped back.
    """

    def __init__(self, floor: int = ACQ_MIN, now_ns: Callable[[], int] = timestamp.now_ns) -> None:
        self.last = floor
        self._now_ns = now_ns

    def reserve(self, count: int) -> int:
        """Reserve ``count`` consecutive acq values; returns the first."""
        start = max(self._now_ns(), self.last + 1)
        if start + count - 1 >= ACQ_MAX:
            raise OverflowError("acq clock exhausted")
        self.last = start + count - 1
        return start


ACQ_UNSET = -1
"""The acq a mapping gives a record: the batcher assigns one (``puta``)."""


def assign_acq(records: Sequence[Record[bytes]], first: int) -> list[Record[bytes]]:
    """Copies of ``records`` whose acq are ``first, first + 1, ...`` (keys are immutable).

    A record whose acq is already set (not :data:`ACQ_UNSET`) keeps it: a source that can
    name a record's acq from its position (the files source) makes a record read twice
    overwrite itself instead of being stored twice.
    ``tuple.__new__`` directly: measured the fastest way to build keys and records here.
    """
    new = tuple.__new__
    return [
        new(Record, (r[0], r[1], r[2], r[3], acq if r[4] == -1 else r[4], r[5]))
        for r, acq in zip(records, itertools.count(first))
    ]
