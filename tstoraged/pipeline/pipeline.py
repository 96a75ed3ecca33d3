"""The :class:`Pipeline`: intake -> batcher -> stage (memory handoff or spool) -> writer.

One object owns the three parts and their tasks (an asyncio TaskGroup in :meth:`Pipeline.run`).
Sources call :meth:`Pipeline.emit` (through their ``SourceContext``); the daemon calls
:meth:`drain` on SIGTERM and :meth:`reconfigure` on SIGHUP.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from tstorage_client.record import ACQ_MIN, Record
from tstoraged.pipeline.batch import AcqClock
from tstoraged.pipeline.batcher import Batcher
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.intake import Intake
from tstoraged.pipeline.observer import NullObserver, PipelineObserver
from tstoraged.pipeline.settings import BatchSettings, QueueSettings, RetrySettings, TargetSettings
from tstoraged.pipeline.sink import ChannelSink
from tstoraged.pipeline.stage import BatchSink, BatchSource, MemoryHandoff
from tstoraged.pipeline.writer import SinkFactory, Sleep, Writer
from tstoraged.source import Ack

__all__ = ["DrainReport", "Emit", "Pipeline", "Stage"]

log = structlog.get_logger("tstoraged.pipeline")

_DRAIN_CHECK_S = 0.05
"""How often a drain looks whether the spool keeps what is left (see :meth:`Pipeline.drain`)."""

Emit = Callable[[Sequence[Record[bytes]], Ack | None], Awaitable[None]]
"""A source's bound emit: ``await emit(records, ack)``."""


class Stage(BatchSink, BatchSource, Protocol):
    """What sits between batcher and writer: a memory handoff, or a disk spool."""

    @property
    def persistent(self) -> bool:
        """True when what the stage took survives a stop (a disk spool): the batch the writer
        is delivering is kept too, until ``done``."""

    @property
    def backlog_records(self) -> int:
        """Records the stage keeps on disk, not yet delivered (0 for a memory stage)."""


@dataclass(frozen=True)
class DrainReport:
    """Outcome of :meth:`Pipeline.drain`."""

    complete: bool
    """Nothing is left only in memory: every record handed to the pipeline was written,
    dead-lettered or is durable in the spool, and every ack fired."""
    undelivered_records: int
    """Records only in memory (intake, open batch, handoff, in flight without a spool) when
    the time ran out: not persisted."""
    error: str | None = None
    """The pipeline's own failure, if it crashed instead of draining."""
    spooled_records: int = 0
    """Records kept durably in the spool, delivered after the next start."""


class Pipeline:
    """Bounded intake, batcher and writer, run together.

    Memory held by records is bounded by the queue limits plus at most four batches: the one
    being filled or handed over, two in the in-memory handoff, and the one being written.
    """

    def __init__(
        self,
        *,
        target: TargetSettings,
        batch: BatchSettings,
        queue: QueueSettings,
        retry: RetrySettings,
        dead_letters: DeadLetterFile,
        observer: PipelineObserver | None = None,
        stage: Stage | None = None,
        sink_factory: SinkFactory = ChannelSink,
        acq_floor: int = ACQ_MIN,
        first_seq: int = 0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        observer = observer or NullObserver()
        self.observer = observer
        self.dead_letters = dead_letters
        self.stage: Stage = stage if stage is not None else MemoryHandoff()
        self.intake = Intake(queue, target.write_mode, observer)
        self.batcher = Batcher(
            self.intake,
            self.stage,
            batch,
            write_mode=target.write_mode,
            acq_clock=AcqClock(acq_floor),
            first_seq=first_seq,
        )
        self.writer = Writer(
            self.stage,
            target,
            retry,
            dead_letters,
            observer=observer,
            sink_factory=sink_factory,
            sleep=sleep,
            waiting=lambda: self.waiting_records,
        )
        self._task: asyncio.Task[None] | None = None

    async def emit(
        self, source: str, records: Sequence[Record[bytes]], ack: Ack | None = None
    ) -> None:
        """Hand records of ``source`` to the pipeline; waits while it is full.

        See :meth:`tstoraged.SourceContext.emit`. Raises
        :class:`~tstoraged.pipeline.intake.IntakeClosed` once draining has begun.
        """
        await self.intake.emit(source, records, ack)

    def emitter(self, source: str) -> Emit:
        """``emit`` bound to one source, for its ``SourceContext``."""
        return functools.partial(self.intake.emit, source)

    @property
    def buffered_records(self) -> int:
        """Records accepted and not yet written, dead-lettered or durable in a spool: the
        records held only in memory."""
        in_flight = 0 if self.stage.persistent else self.writer.in_flight_records
        return (
            self.intake.buffered_records
            + self.batcher.pending_records
            + self.stage.pending_records
            + in_flight
        )

    @property
    def waiting_records(self) -> int:
        """Records accepted and not yet delivered: in memory, and in the spool."""
        return self.buffered_records + self.stage.backlog_records

    async def run(self) -> None:
        """Run batcher and writer until drained (or cancelled)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.batcher.run(), name="pipeline-batcher")
            group.create_task(self.writer.run(), name="pipeline-writer")

    def start(self) -> asyncio.Task[None]:
        """Run the pipeline in a task of its own (stopped by :meth:`drain`)."""
        if self._task is not None:
            raise RuntimeError("pipeline already started")
        self._task = asyncio.create_task(self.run(), name="pipeline")
        return self._task

    async def __aenter__(self) -> Pipeline:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain(0)

    def reconfigure(
        self,
        *,
        target: TargetSettings | None = None,
        batch: BatchSettings | None = None,
        queue: QueueSettings | None = None,
        retry: RetrySettings | None = None,
    ) -> None:
        """Apply reloaded settings without losing buffered records.

        Queue and batch limits apply at once (a batch already past new limits is sealed);
        retry settings from the next write; a new host/port from the next attempt.
        ``write_mode`` cannot change while running (ValueError).
        """
        if target is not None:
            self.writer.reconfigure(target=target)
        if retry is not None:
            self.writer.reconfigure(retry=retry)
        if queue is not None:
            self.intake.reconfigure(queue)
        if batch is not None:
            self.batcher.reconfigure(batch)

    async def drain(self, timeout: float) -> DrainReport:  # noqa: ASYNC109 - a budget, not a cancel scope
        """Stop accepting records, deliver everything buffered, wait at most ``timeout`` s.

        With a spool, waiting ends early once everything is durable in it while TStorage is
        unreachable: the spool keeps it for the next start (``spool_backlog_kept``, info).
        What is only in memory when the time runs out is cancelled (its acks never fire, so
        sources that can re-read send it again after a restart) and logged as
        ``drain_incomplete``.
        """
        self.intake.close()
        task = self._task
        if task is None:
            return DrainReport(self.buffered_records == 0, self.buffered_records)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not task.done() and loop.time() < deadline:
            if self._kept_by_the_spool():
                break
            await asyncio.wait({task}, timeout=min(_DRAIN_CHECK_S, deadline - loop.time()))
        if not task.done():
            task.cancel()
            # The task only awaits stages that honour cancellation; this returns promptly.
            await asyncio.wait({task})
        error: str | None = None
        if not task.cancelled() and task.exception() is not None:
            error = repr(task.exception())
            log.error("pipeline_failed", error=error)
        undelivered = self.buffered_records
        spooled = self.stage.backlog_records
        if spooled:
            outage = self.writer.outage
            cause = outage.last_cause
            log.info(
                "spool_backlog_kept",
                records=spooled,
                delivered="after the next start, oldest first",
                why="TStorage is unreachable" if cause else "drain_timeout ran out",
                reason=cause.reason if cause else None,
                outage_s=None if outage.outage_s is None else round(outage.outage_s, 1),
                rate_limit=False,
            )
        if undelivered:
            log.warning(
                "drain_incomplete",
                undelivered_records=undelivered,
                persisted=False,
                hint="sources that can re-read (files, MQTT) send these again after a "
                "restart; records of other sources are lost",
                rate_limit=False,
            )
        return DrainReport(not undelivered and error is None, undelivered, error, spooled)

    def _kept_by_the_spool(self) -> bool:
        """Everything handed over is durable in the spool and TStorage is unreachable."""
        return (
            self.stage.persistent
            and self.writer.outage.outage_s is not None
            and self.intake.exhausted
            and self.batcher.pending_records == 0
        )
