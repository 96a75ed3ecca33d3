"""The bounded intake between sources and batcher: ``emit`` waits while it is full.

Memory is bounded by ``[queue] max_records`` and ``max_bytes`` (wire-size estimate): an emit
is admitted in parts as room frees up, so even a single huge emit never holds more than the
bound here (a single record larger than ``max_bytes`` is admitted alone into an empty queue).
Records leave in emit order; the ack of an emit travels with its last part, so it fires after
every record of that emit, and after the acks of the source's earlier emits.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from tstorage_client.record import Record
from tstoraged.pipeline.batch import CID_BATCH_OVERHEAD, record_overhead, records_wire_size
from tstoraged.pipeline.observer import NullObserver, PipelineObserver
from tstoraged.pipeline.settings import QueueSettings, WriteMode
from tstoraged.source import Ack

__all__ = ["Chunk", "Intake", "IntakeClosed"]

# A record is the flat tuple (cid, mid, moid, cap, acq, payload).
_cid_of = itemgetter(0)


class IntakeClosed(RuntimeError):
    """The pipeline is draining or stopped: no more records are accepted."""


@dataclass(eq=False, slots=True)
class Chunk:
    """A run of records of one source, as queued; ``ack`` is set on an emit's last part."""

    source: str
    records: Sequence[Record[bytes]]
    nbytes: int
    """Wire size of the records alone (no request or per-cid headers)."""
    cids: set[int] = field(default_factory=set)
    """The cids among the records (a superset after a prefix was taken off)."""
    ack: Ack | None = None


def _cids(records: Sequence[Record[bytes]]) -> set[int]:
    return set(map(_cid_of, records))


class Intake:
    """Bounded FIFO of :class:`Chunk` with per-source emit ordering."""

    def __init__(
        self,
        settings: QueueSettings,
        write_mode: WriteMode = "put",
        observer: PipelineObserver | None = None,
    ) -> None:
        self._settings = settings
        self._overhead = record_overhead(write_mode)
        self._observer: PipelineObserver = observer or NullObserver()
        self._chunks: collections.deque[Chunk] = collections.deque()
        self._records = 0
        self._bytes = 0
        self._ack_only = 0  # queued chunks that carry only an ack
        self._closed = False
        # Set whenever room is freed / data arrives; waiters re-check their condition.
        self._space = asyncio.Event()
        self._data = asyncio.Event()
        # Emits of one source are serialized so that their acks keep call order.
        self._source_locks: dict[str, asyncio.Lock] = {}

    @property
    def buffered_records(self) -> int:
        """Records currently queued."""
        return self._records

    @property
    def buffered_bytes(self) -> int:
        """Wire-size estimate of the queued records."""
        return self._bytes

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def exhausted(self) -> bool:
        """Closed and empty: the batcher has taken everything."""
        return self._closed and not self._chunks

    def reconfigure(self, settings: QueueSettings) -> None:
        """Apply new bounds; queued records stay. Larger bounds wake blocked emitters at once."""
        self._settings = settings
        self._space.set()

    def close(self) -> None:
        """Stop accepting records; blocked and later emits raise :class:`IntakeClosed`."""
        self._closed = True
        self._space.set()
        self._data.set()

    async def emit(
        self, source: str, records: Sequence[Record[bytes]], ack: Ack | None = None
    ) -> None:
        """Queue ``records`` of ``source``; waits while the intake is full.

        Raises :class:`IntakeClosed` when the intake is closed before everything was admitted;
        the ack is then never called (the source re-reads from its last committed position).
        """
        if self._closed:
            raise IntakeClosed("the pipeline does not accept records any more")
        if not records and ack is None:
            return
        lock = self._source_locks.get(source)
        if lock is None:
            lock = self._source_locks[source] = asyncio.Lock()
        async with lock:
            if records:
                self._observer.records_received(source, len(records))
            await self._admit(source, records, ack)

    async def _admit(self, source: str, records: Sequence[Record[bytes]], ack: Ack | None) -> None:
        if not records:
            # An ack alone holds one record's room, so a source that only commits positions
            # (all its input rejected) cannot grow the queue while the writer is stuck.
            while self._chunks and self._records + self._ack_only >= self._settings.max_records:
                self._space.clear()
                await self._space.wait()
                if self._closed:
                    raise IntakeClosed("the pipeline stopped while an ack was waiting")
            self._ack_only += 1
            self._append(Chunk(source, (), 0, set(), ack))
            return
        pos, total = 0, len(records)
        while pos < total:
            count, nbytes = self._room_for(records, pos)
            while count == 0:
                self._space.clear()
                await self._space.wait()
                if self._closed:
                    raise IntakeClosed("the pipeline stopped while records were waiting")
                count, nbytes = self._room_for(records, pos)
            part = records if count == total else records[pos : pos + count]
            pos += count
            self._append(Chunk(source, part, nbytes, _cids(part), ack if pos == total else None))

    def _room_for(self, records: Sequence[Record[bytes]], pos: int) -> tuple[int, int]:
        """How many of ``records[pos:]`` fit now, and their wire size."""
        if self._closed:
            raise IntakeClosed("the pipeline does not accept records any more")
        room_records = self._settings.max_records - self._records - self._ack_only
        room_bytes = self._settings.max_bytes - self._bytes
        empty = not self._chunks
        count = min(len(records) - pos, room_records)
        if count <= 0:
            return (1, self._overhead + len(records[pos][5])) if empty else (0, 0)
        part = records[pos : pos + count] if pos or count < len(records) else records
        nbytes = records_wire_size(part, self._overhead)
        if nbytes <= room_bytes:
            return count, nbytes
        # Slow path: the records that fit in the bytes left, one by one.
        count, nbytes = 0, 0
        for record in part:
            size = self._overhead + len(record[5])
            if nbytes + size > room_bytes:
                break
            count += 1
            nbytes += size
        if count == 0 and empty:
            return 1, self._overhead + len(records[pos][5])
        return count, nbytes

    def _append(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._records += len(chunk.records)
        self._bytes += chunk.nbytes
        self._data.set()
        self._observer.queue_depth(self._records, self._bytes)

    @property
    def has_chunks(self) -> bool:
        """True when something (records or an ack) is queued."""
        return bool(self._chunks)

    async def wait_ready(self) -> None:
        """Wait until a chunk is queued, the intake is closed, or :meth:`notify` is called.

        Callers re-check their own condition after it returns.
        """
        if self._chunks or self._closed:
            return
        self._data.clear()
        await self._data.wait()

    def notify(self) -> None:
        """Wake :meth:`wait_ready` (e.g. after new batch limits were set)."""
        self._data.set()

    def take(
        self, max_records: int, max_bytes: int, known_cids: set[int], *, at_least_one: bool
    ) -> Chunk | None:
        """Take the longest prefix of the oldest chunk that fits the given room.

        ``max_bytes`` counts the records and one per-cid header for each cid not in
        ``known_cids``. With ``at_least_one`` a first record is taken even if it alone exceeds
        the room (an oversized record goes alone into an empty batch). Returns None when
        nothing is queued or nothing fits.
        """
        if not self._chunks:
            return None
        head = self._chunks[0]
        total = len(head.records)
        new_cids = head.cids - known_cids
        if total <= max_records and head.nbytes + CID_BATCH_OVERHEAD * len(new_cids) <= max_bytes:
            self._chunks.popleft()
            if not total:
                self._ack_only -= 1
            return self._took(head, head.nbytes)
        part, nbytes, cids = self._prefix(head, max_records, max_bytes, known_cids)
        if not part and at_least_one and total:
            part, nbytes, cids = self._forced_one(head)
        if not part:
            return None
        head.records = head.records[len(part) :]
        head.nbytes -= nbytes
        return self._took(Chunk(head.source, part, nbytes, cids), nbytes)

    def _prefix(
        self, head: Chunk, max_records: int, max_bytes: int, known_cids: set[int]
    ) -> tuple[Sequence[Record[bytes]], int, set[int]]:
        overhead = self._overhead
        count = nbytes = headers = 0
        cids: set[int] = set()
        for record in head.records:
            if count >= max_records:
                break
            size = overhead + len(record[5])
            cid = record[0]
            new_cid = cid not in known_cids and cid not in cids
            extra = CID_BATCH_OVERHEAD if new_cid else 0
            if nbytes + headers + size + extra > max_bytes:
                break
            if new_cid:
                cids.add(cid)
            headers += extra
            nbytes += size
            count += 1
        return head.records[:count], nbytes, cids

    def _forced_one(self, head: Chunk) -> tuple[Sequence[Record[bytes]], int, set[int]]:
        first = head.records[0]
        return head.records[:1], self._overhead + len(first[5]), {first[0]}

    def _took(self, chunk: Chunk, nbytes: int) -> Chunk:
        self._records -= len(chunk.records)
        self._bytes -= nbytes
        self._space.set()
        self._observer.queue_depth(self._records, self._bytes)
        return chunk
