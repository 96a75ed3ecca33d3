"""The interface between batcher and writer, where a disk spool can be inserted.

The batcher hands sealed batches to a :class:`BatchSink`; the writer takes them from a
:class:`BatchSource`. :class:`MemoryHandoff` is both: a small bounded FIFO, so a slow writer
backs up into the intake and from there into the sources. A spool implements the same two
protocols: ``submit`` appends durably and fires the batch's acks (:meth:`Batch.fire_acks`),
``next_batch`` replays in order, and ``done`` trims what the writer has finished.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from tstoraged.pipeline.batch import Batch

__all__ = ["BatchSink", "BatchSource", "MemoryHandoff"]


class BatchSink(Protocol):
    """Where the batcher puts sealed batches."""

    async def submit(self, batch: Batch) -> None:
        """Accept ``batch``; waits while the stage is full (backpressure)."""

    def close(self) -> None:
        """No more batches will be submitted; ``next_batch`` returns None once drained."""


class BatchSource(Protocol):
    """Where the writer takes batches from, oldest first."""

    async def next_batch(self) -> Batch | None:
        """The next batch to write; None when closed and nothing is left."""

    async def done(self, batch: Batch) -> None:
        """The writer finished ``batch`` (written or dead-lettered): it may be forgotten."""

    @property
    def pending_records(self) -> int:
        """Records in batches not yet handed to the writer."""


class MemoryHandoff:
    """In-memory bounded FIFO of batches: the default stage between batcher and writer."""

    def __init__(self, max_batches: int = 2) -> None:
        if max_batches < 1:
            raise ValueError("max_batches must be >= 1")
        self._max = max_batches
        self._batches: collections.deque[Batch] = collections.deque()
        self._closed = False
        self._changed = asyncio.Event()

    @property
    def pending_records(self) -> int:
        """Records in queued batches."""
        return sum(len(batch) for batch in self._batches)

    @property
    def persistent(self) -> bool:
        """False: batches live in memory only."""
        return False

    @property
    def backlog_records(self) -> int:
        """Nothing is kept on disk."""
        return 0

    @property
    def pending_batches(self) -> int:
        """Number of queued batches."""
        return len(self._batches)

    async def submit(self, batch: Batch) -> None:
        """Queue ``batch``; waits while ``max_batches`` are queued."""
        if self._closed:
            raise RuntimeError("submit after close")
        while len(self._batches) >= self._max:
            self._changed.clear()
            await self._changed.wait()
        self._batches.append(batch)
        self._changed.set()

    def close(self) -> None:
        """Mark the end of the stream."""
        self._closed = True
        self._changed.set()

    async def next_batch(self) -> Batch | None:
        """The oldest queued batch, waiting for one; None once closed and empty."""
        while not self._batches:
            if self._closed:
                return None
            self._changed.clear()
            await self._changed.wait()
        batch = self._batches.popleft()
        self._changed.set()
        return batch

    async def done(self, batch: Batch) -> None:
        """Nothing to do: the batch lived only in memory."""
