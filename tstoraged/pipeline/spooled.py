"""The disk spool as the stage between batcher and writer: :class:`SpoolStage`.

``submit`` appends a sealed batch to the :class:`~tstoraged.spool.Spool` and, once the append
is durable (fsynced, per the spool's fsync policy), fires the batch's acks: from then on the
sources may forget those records. The writer reads batches back from the spool in order and
commits each after TStorage answered OK (or it was dead-lettered), which frees the disk space.
After a crash or restart, every batch not committed is delivered again, oldest first.

A batch is stored as GET record frames (``int32 n, key, payload`` with the full key, acq
included), so a ``puta`` batch keeps the acq assigned when it was sealed through every replay,
and is decoded with the client's fast record decoder.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.protocol import server as wire_out
from tstorage_client.protocol._codec import codec_for
from tstorage_client.protocol.client import GetResponseParser, NeedData, RecordsBatch
from tstorage_client.record import Record
from tstoraged.pipeline.batch import Batch
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.observer import PipelineObserver
from tstoraged.pipeline.settings import WriteMode
from tstoraged.spool import DropReport, FsyncPolicy, OverflowPolicy, Spool, SpoolEntry

__all__ = ["SpoolStage", "decode_batch", "encode_batch"]

log = structlog.get_logger("tstoraged.spool")

_CODEC = codec_for(BytesPayloadType())
_HEAD = wire_out.encode_get_header()
_TAIL = wire_out.encode_get_end(0)


def encode_batch(records: list[Record[bytes]]) -> bytes:
    """The records as GET record frames (full keys)."""
    return wire_out.encode_records((*key, payload) for key, payload in records)


def decode_batch(payload: bytes) -> list[Record[bytes]]:
    """Records back from :func:`encode_batch`'s bytes; ValueError when they do not parse."""
    parser = GetResponseParser(_CODEC, memory_limit=len(payload) + 64)
    parser.feed(_HEAD + payload + _TAIL)
    records: list[Record[bytes]] = []
    while True:
        event = parser.next_event()
        if isinstance(event, RecordsBatch):
            records.extend(event.records)
        elif isinstance(event, NeedData):
            raise ValueError("spooled batch is truncated")
        elif event.is_ok():
            return records
        else:
            raise ValueError(f"spooled batch does not parse: {event.result.name}")


class SpoolStage:
    """Batcher -> disk spool -> writer, with acks at durability (see the module docstring)."""

    def __init__(
        self,
        spool: Spool,
        *,
        write_mode: WriteMode,
        dead_letters: DeadLetterFile,
        observer: PipelineObserver,
    ) -> None:
        self.spool = spool
        self._write_mode = write_mode
        self._dead_letters = dead_letters
        self._observer = observer
        self._closed = asyncio.Event()
        self._durable: collections.deque[tuple[int, Batch]] = collections.deque()
        self._durable_added = asyncio.Event()
        self._acker = asyncio.create_task(self._fire_acks_when_durable(), name="spool-acks")
        self._reader: AsyncIterator[SpoolEntry] | None = None
        self._reader_follows = True

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        write_mode: WriteMode,
        dead_letters: DeadLetterFile,
        observer: PipelineObserver,
        max_size: int,
        fsync: FsyncPolicy,
        fsync_interval: float,
        overflow: OverflowPolicy,
        min_free_space: int,
    ) -> SpoolStage:
        """Open (recovering if needed) the spool in ``directory`` and wrap it."""
        holder: list[SpoolStage] = []
        spool = await Spool.open(
            directory,
            max_size=max_size,
            # Space is reclaimed a whole segment at a time: keep segments small against max_size.
            segment_size=max(1 << 20, min(64 << 20, max_size // 16)),
            fsync=fsync,
            fsync_interval=fsync_interval,
            overflow=overflow,
            min_free_space=min_free_space,
            on_drop=lambda report: holder[0].on_drop(report),
        )
        stage = cls(spool, write_mode=write_mode, dead_letters=dead_letters, observer=observer)
        holder.append(stage)
        stage._report()
        return stage

    @property
    def pending_records(self) -> int:
        """Records held in memory by this stage: none — the backlog lives on disk."""
        return 0

    # -- BatchSink ----------------------------------------------------------------------------

    async def submit(self, batch: Batch) -> None:
        """Append ``batch`` durably (may wait when the spool is full and overflow is block)."""
        meta = {
            "records": len(batch.records),
            "sources": batch.source_counts(),
            "segments": batch.segments,
            "sealed": time.time(),
        }
        seq = await self.spool.append(encode_batch(batch.records), meta)
        self._durable.append((seq, batch))
        self._durable_added.set()
        self._report()

    def close(self) -> None:
        """No more batches will come; the writer drains what the spool holds, then stops."""
        self._closed.set()

    async def _fire_acks_when_durable(self) -> None:
        # One task, first in first out: acks fire in batch order even when several appends
        # become durable with the same fsync.
        while True:
            while not self._durable:
                self._durable_added.clear()
                await self._durable_added.wait()
            seq, batch = self._durable[0]
            await self.spool.durable(seq)
            self._durable.popleft()
            # Rejects a source dead-lettered before this emit must be durable before its ack.
            self._dead_letters.sync()
            batch.fire_acks()

    # -- BatchSource --------------------------------------------------------------------------

    async def next_batch(self) -> Batch | None:
        """The oldest batch not yet delivered; None once closed and the spool is empty."""
        while True:
            entry = await self._next_entry()
            if entry is None:
                return None
            try:
                records = decode_batch(entry.payload)
            except ValueError as exc:
                # The frame's checksum was fine, so this is not disk damage but a bug or a
                # foreign file: keep the bytes in the dead-letter file and go on.
                log.error("spool_batch_undecodable", seq=entry.seq, error=str(exc))
                self._dead_letters.write_raw(
                    "spool", entry.payload, f"undecodable spooled batch: {exc}", origin=None
                )
                await self.spool.commit(entry.seq)
                continue
            segments = [(str(s), int(n)) for s, n in entry.meta.get("segments", [])]
            if sum(n for _, n in segments) != len(records):
                segments = [("spool", len(records))]
            now = time.monotonic()
            return Batch(
                seq=entry.seq,
                write_mode=self._write_mode,
                records=records,
                segments=segments,
                acks=[],  # fired when the batch became durable in the spool
                nbytes=len(entry.payload),
                created=now,
                sealed=now,
            )

    async def _next_entry(self) -> SpoolEntry | None:
        while True:
            if self._reader is None:
                self._reader_follows = not self._closed.is_set()
                self._reader = self.spool.read(follow=self._reader_follows).__aiter__()
            step = asyncio.ensure_future(anext(self._reader, None))
            if self._reader_follows:
                closed = asyncio.ensure_future(self._closed.wait())
                done, _ = await asyncio.wait({step, closed}, return_when=asyncio.FIRST_COMPLETED)
                closed.cancel()
                if step not in done:
                    # Closing: stop following new appends; read what is left, then end.
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    self._reader = None
                    continue
            entry = await step
            if entry is None and not self._reader_follows:
                return None
            if entry is not None:
                return entry

    async def done(self, batch: Batch) -> None:
        """The writer finished ``batch``: commit it, freeing its space."""
        await self.spool.commit(batch.seq)
        self._report()

    # -- lifecycle ----------------------------------------------------------------------------

    def _report(self) -> None:
        stats = self.spool.stats()
        self._observer.spool_state(stats.bytes, stats.batches, stats.oldest_age_s)

    def on_drop(self, report: DropReport) -> None:
        """Called by the spool when ``overflow = "drop_oldest"`` deleted unsent batches."""
        for source, count in report.by_source.items():
            self._observer.records_dropped(source, count, f"spool full ({report.reason})")
        log.warning(
            "spool_dropped_oldest",
            batches=report.batches,
            records=report.records,
            bytes=report.bytes,
            reason=report.reason,
            by_source=dict(report.by_source),
        )

    async def aclose(self) -> None:
        """Fire the acks of what is durable, stop the ack task, close the spool."""
        while self._durable:
            seq, batch = self._durable.popleft()
            with contextlib.suppress(Exception):
                await self.spool.durable(seq)
                self._dead_letters.sync()
                batch.fire_acks()
        self._acker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._acker
        await self.spool.close()
