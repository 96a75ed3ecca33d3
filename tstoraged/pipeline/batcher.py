"""The batcher: turns the intake's stream of records into sealed batches.

A batch is closed at ``max_batch_size`` bytes (wire-size estimate of the whole request),
``max_records``, or ``flush_interval`` after its first record, whichever comes first; it never
exceeds the limits, except that a single record larger than ``max_batch_size`` travels alone.
With ``write_mode = "puta"`` acq values are assigned when the batch is sealed, so every retry
and replay of the batch writes the very same keys (overwrite, not duplicate).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tstorage_client.record import Record
from tstoraged.pipeline.batch import (
    CID_BATCH_OVERHEAD,
    REQUEST_OVERHEAD,
    AcqClock,
    Batch,
    assign_acq,
)
from tstoraged.pipeline.intake import Chunk, Intake
from tstoraged.pipeline.settings import BatchSettings, WriteMode
from tstoraged.pipeline.stage import BatchSink
from tstoraged.source import Ack

__all__ = ["Batcher"]


class _OpenBatch:
    """The batch being filled."""

    __slots__ = ("acks", "cids", "created", "nbytes", "records", "segments")

    def __init__(self, created: float) -> None:
        self.records: list[Record[bytes]] = []
        self.segments: list[tuple[str, int]] = []
        self.acks: list[Ack] = []
        self.cids: set[int] = set()
        self.nbytes = REQUEST_OVERHEAD
        self.created = created

    def add(self, chunk: Chunk) -> None:
        records = chunk.records
        if records:
            self.records.extend(records)
            if self.segments and self.segments[-1][0] == chunk.source:
                self.segments[-1] = (chunk.source, self.segments[-1][1] + len(records))
            else:
                self.segments.append((chunk.source, len(records)))
            new_cids = chunk.cids - self.cids
            self.cids |= new_cids
            self.nbytes += chunk.nbytes + CID_BATCH_OVERHEAD * len(new_cids)
        if chunk.ack is not None:
            self.acks.append(chunk.ack)


class Batcher:
    """Takes chunks from an :class:`Intake`, seals batches, submits them to a :class:`BatchSink`."""

    def __init__(
        self,
        intake: Intake,
        sink: BatchSink,
        settings: BatchSettings,
        *,
        write_mode: WriteMode = "put",
        acq_clock: AcqClock | None = None,
        first_seq: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._intake = intake
        self._sink = sink
        self._settings = settings
        self._write_mode = write_mode
        self._acq_clock = acq_clock or AcqClock()
        self._next_seq = first_seq
        self._clock = clock
        self._open: _OpenBatch | None = None
        self._sealing: Batch | None = None

    @property
    def pending_records(self) -> int:
        """Records taken from the intake and not yet accepted by the sink."""
        sealing = len(self._sealing) if self._sealing is not None else 0
        return sealing + (len(self._open.records) if self._open is not None else 0)

    @property
    def acq_clock(self) -> AcqClock:
        """The clock assigning acq on seal (its ``last`` is what a spool persists)."""
        return self._acq_clock

    def reconfigure(self, settings: BatchSettings) -> None:
        """New limits apply from now on; an open batch already past them is sealed next."""
        self._settings = settings
        # Wake the fill loop so a shorter flush interval or smaller limit takes effect.
        self._intake.notify()

    async def run(self) -> None:
        """Batch until the intake is closed and empty, then close the sink."""
        try:
            while True:
                await self._fill()
                if self._open is not None:
                    await self._seal()
                elif self._intake.exhausted:
                    break
        finally:
            self._sink.close()

    def _full(self, batch: _OpenBatch) -> bool:
        settings = self._settings
        return len(batch.records) >= settings.max_records or batch.nbytes >= settings.max_batch_size

    async def _fill(self) -> None:
        """Add chunks to the open batch until it is due to be sealed or the intake ends."""
        intake = self._intake
        while True:
            batch = self._open
            if batch is None:
                while not intake.has_chunks and not intake.closed:
                    await intake.wait_ready()
                if intake.exhausted:
                    return
                batch = self._open = _OpenBatch(self._clock())
            else:
                if self._full(batch):
                    return
                remaining = batch.created + self._settings.flush_interval - self._clock()
                if remaining <= 0:
                    return
                if not intake.has_chunks:
                    if intake.closed:
                        return  # draining: nothing more will come, seal now
                    try:
                        async with asyncio.timeout(remaining):
                            await intake.wait_ready()
                    except TimeoutError:
                        return
                    continue
            chunk = intake.take(
                self._settings.max_records - len(batch.records),
                self._settings.max_batch_size - batch.nbytes,
                batch.cids,
                at_least_one=not batch.records,
            )
            if chunk is None:
                return  # the next record does not fit
            batch.add(chunk)

    async def _seal(self) -> None:
        open_batch = self._open
        assert open_batch is not None
        records = open_batch.records
        if self._write_mode == "puta" and records:
            records = assign_acq(records, self._acq_clock.reserve(len(records)))
        batch = Batch(
            seq=self._next_seq,
            write_mode=self._write_mode,
            records=records,
            segments=open_batch.segments,
            acks=open_batch.acks,
            nbytes=open_batch.nbytes,
            created=open_batch.created,
            sealed=self._clock(),
        )
        self._next_seq += 1
        self._open = None
        self._sealing = batch
        await self._sink.submit(batch)
        self._sealing = None
