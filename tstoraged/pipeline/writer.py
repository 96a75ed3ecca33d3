"""The writer: delivers batches to TStorage, or dead-letters what cannot be delivered.

For each batch, in order:

1. records that fail the client-side checks (:mod:`.validation`) are dead-lettered, never sent;
2. the rest is written with put or puta; a *transient* failure (DISCONNECTED, a connection
   error or timeout) drops the connection and is retried by tenacity with capped, jittered
   exponential backoff, reconnecting on the next attempt; when the give-up policy ends the
   retries, the undelivered records are dead-lettered with the reason;
3. a batch TStorage *refuses* (ERROR or another error status on a working connection), or that
   the client fails to send with an unexpected exception, is split in halves, recursively,
   until the refused records are isolated; a single record is refused twice (on fresh
   connections) before it is dead-lettered with the reason. At most ``max_refusals``
   refusals are spent on one batch, so isolation always ends;
4. the batch's acks fire (written or dead-lettered: either way the records are durable).
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from tstorage_client.record import Record
from tstorage_client.response import ResponseStatus
from tstoraged.pipeline.batch import (
    REQUEST_OVERHEAD,
    Batch,
    record_overhead,
    records_wire_size,
)
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.observer import NullObserver, PipelineObserver
from tstoraged.pipeline.settings import RetrySettings, TargetSettings, WriteMode
from tstoraged.pipeline.sink import ChannelSink, Sink
from tstoraged.pipeline.stage import BatchSource
from tstoraged.pipeline.validation import invalid_records

__all__ = ["Backoff", "TransientWriteError", "Writer"]

log = structlog.get_logger("tstoraged.pipeline.writer")

SinkFactory = Callable[[TargetSettings], Sink]
Sleep = Callable[[float], Awaitable[None]]


class TransientWriteError(Exception):
    """A write attempt failed in a way that a later attempt may not (retried)."""


class Backoff(wait_base):
    """Wait before retry n: ``initial * 2**(n-1)`` capped at ``max``, spread by +-``jitter``."""

    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()

    def __call__(self, retry_state: RetryCallState) -> float:
        settings = self.settings
        exponent = min(retry_state.attempt_number - 1, 62)  # beyond this it is capped anyway
        base = min(settings.max_backoff, settings.initial_backoff * 2.0**exponent)
        spread = base * settings.jitter
        return max(0.0, min(settings.max_backoff, base + self._rng.uniform(-spread, spread)))


def _stop_policy(settings: RetrySettings) -> stop_base:
    stop: stop_base = stop_never
    if settings.give_up_after_attempts is not None:
        stop = stop_after_attempt(settings.give_up_after_attempts)
    if settings.give_up_after_seconds is not None:
        by_time = stop_after_delay(settings.give_up_after_seconds)
        stop = by_time if stop is stop_never else stop | by_time
    return stop


@dataclass
class _GaveUp:
    """Transient failures outlasted the give-up policy."""

    reason: str


@dataclass
class _Refused:
    """The write was refused: an error status, or an error the client raised for the data."""

    reason: str


@dataclass
class _Part:
    """A contiguous slice ``positions[lo:hi]`` of the batch still to deliver."""

    lo: int
    hi: int
    refused_before: bool = False


class Writer:
    """Takes batches from a :class:`BatchSource` and delivers them, one at a time, in order."""

    def __init__(
        self,
        source: BatchSource,
        target: TargetSettings,
        retry: RetrySettings,
        dead_letters: DeadLetterFile,
        *,
        observer: PipelineObserver | None = None,
        sink_factory: SinkFactory = ChannelSink,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._target = target
        self._retry = retry
        self._dead_letters = dead_letters
        self._observer: PipelineObserver = observer or NullObserver()
        self._sink_factory = sink_factory
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._sink: Sink | None = None
        self._sink_settings: TargetSettings | None = None
        self._connected = False
        self._in_flight: Batch | None = None
        self.last_write_ok: float | None = None
        """Wall-clock time (``time.time()``) of the last successful write."""

    @property
    def in_flight_records(self) -> int:
        """Records of the batch being delivered right now."""
        return len(self._in_flight) if self._in_flight is not None else 0

    def reconfigure(
        self, *, target: TargetSettings | None = None, retry: RetrySettings | None = None
    ) -> None:
        """New retry settings apply to the next write; a new target to the next attempt."""
        if retry is not None:
            self._retry = retry
        if target is not None and target != self._target:
            if target.write_mode != self._target.write_mode:
                raise ValueError("write_mode cannot change while running (restart the daemon)")
            self._target = target

    async def run(self) -> None:
        """Deliver batches until the source is drained."""
        try:
            while (batch := await self._source.next_batch()) is not None:
                self._in_flight = batch
                await self.deliver(batch)
                await self._source.done(batch)
                self._in_flight = None
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the connection."""
        if self._sink is not None:
            sink, self._sink = self._sink, None
            await sink.close()
            self._set_connected(False, sink.target)

    async def deliver(self, batch: Batch) -> None:
        """Write or dead-letter every record of ``batch``, then fire its acks."""
        if batch.encoded is not None and await self._deliver_encoded(batch):
            return
        records = batch.records
        positions: Sequence[int] = range(len(records))
        problems = invalid_records(records, batch.write_mode)
        if problems:
            by_reason: dict[str, list[int]] = {}
            for index, reason in problems:
                by_reason.setdefault(reason, []).append(index)
            for reason, invalid in by_reason.items():
                self._dead_letter(batch, invalid, f"invalid record: {reason}")
            bad = {index for index, _ in problems}
            positions = [i for i in positions if i not in bad]
        parts = collections.deque([_Part(0, len(positions))] if positions else [])
        refusals = 0
        while parts:
            part = parts.popleft()
            indices = positions[part.lo : part.hi]
            part_records = _select(records, indices)
            outcome = await self._put(part_records, batch.write_mode, len(part_records))
            if outcome is ResponseStatus.OK:
                for source, count in _source_counts(batch, indices).items():
                    self._observer.records_written(source, count)
                continue
            if isinstance(outcome, _GaveUp):
                # Later parts would wait out the same give-up policy: dead-letter them now.
                for rest in (part, *parts):
                    self._dead_letter(batch, positions[rest.lo : rest.hi], outcome.reason)
                break
            refusals += 1
            reason = outcome.reason
            if refusals >= self._retry.max_refusals:
                log.error("poison_isolation_stopped", batch=batch.seq, refusals=refusals)
                for rest in (part, *parts):
                    self._dead_letter(
                        batch,
                        positions[rest.lo : rest.hi],
                        f"{reason} (isolation stopped after {refusals} refusals)",
                    )
                break
            size = part.hi - part.lo
            if size > 1:
                middle = part.lo + size // 2
                parts.extendleft([_Part(middle, part.hi), _Part(part.lo, middle)])
            elif part.refused_before:
                self._dead_letter(batch, indices, reason)
            else:
                # Once more on a fresh connection: an ERROR can come from a connection breaking.
                parts.appendleft(_Part(part.lo, part.hi, refused_before=True))
        # Rejects the sources wrote before these acks' emits must be durable first.
        self._dead_letters.sync()
        batch.fire_acks()

    async def _deliver_encoded(self, batch: Batch) -> bool:
        """Send a batch kept as a ready request; True when that settled it.

        False when TStorage refused it: the batch is then decoded into records and
        :meth:`deliver` isolates the refused ones like for any other batch.
        """
        assert batch.encoded is not None
        outcome = await self._put(batch.encoded, batch.write_mode, len(batch))
        if outcome is ResponseStatus.OK:
            for source, count in batch.source_counts().items():
                self._observer.records_written(source, count)
            self._dead_letters.sync()
            batch.fire_acks()
            return True
        try:
            batch.materialize()
        except ValueError as exc:
            # A bug, not disk damage (the spool checks every frame): keep the bytes, go on.
            log.error("encoded_batch_decode_failed", batch=batch.seq, error=str(exc))
            self._dead_letters.write_raw("spool", batch.encoded, str(exc), origin=None)
            for source, count in batch.source_counts().items():
                self._observer.records_dead_lettered(source, count, "undecodable batch")
            self._dead_letters.sync()
            batch.fire_acks()
            return True
        if isinstance(outcome, _GaveUp):
            self._dead_letter(batch, range(len(batch.records)), outcome.reason)
            self._dead_letters.sync()
            batch.fire_acks()
            return True
        return False

    def _dead_letter(self, batch: Batch, indices: Sequence[int], reason: str) -> None:
        if not indices:
            return
        records = batch.records
        self._dead_letters.write_records(
            ((batch.source_of(i), records[i]) for i in indices),
            reason,
            origin=f"batch {batch.seq}",
        )
        for source, count in _source_counts(batch, indices).items():
            self._observer.records_dead_lettered(source, count, reason)
        log.error("records_dead_lettered", batch=batch.seq, count=len(indices), reason=reason)

    async def _put(
        self, records: Sequence[Record[bytes]] | bytes, write_mode: WriteMode, count: int
    ) -> Literal[ResponseStatus.OK] | _Refused | _GaveUp:
        """One write with retries of transient failures; OK, a refusal status, or give-up."""
        settings = self._retry
        retrying = AsyncRetrying(
            stop=_stop_policy(settings),
            wait=Backoff(settings, self._rng),
            retry=retry_if_exception_type(TransientWriteError),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(records, write_mode, count)
        except TransientWriteError as exc:
            attempts = retrying.statistics.get("attempt_number", "?")
            return _GaveUp(f"gave up after {attempts} attempts: {exc}")
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        reason = str(outcome.exception()) if outcome is not None else "unknown"
        self._observer.write_retried(reason)
        log.warning(
            "write_retried",
            target=self._target.address,
            attempt=retry_state.attempt_number,
            wait_s=round(retry_state.upcoming_sleep, 3),
            reason=reason,
        )

    async def _attempt(
        self, records: Sequence[Record[bytes]] | bytes, write_mode: WriteMode, count: int
    ) -> Literal[ResponseStatus.OK] | _Refused:
        """One write of ``count`` records, given as records or as a ready request."""
        sink = await self._current_sink()
        started = time.perf_counter()
        try:
            if isinstance(records, bytes):
                status = await sink.write_encoded(records)
            else:
                status = await sink.write(records, write_mode)
        except (OSError, TimeoutError) as exc:
            await self._drop_connection(sink)
            raise TransientWriteError(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            # The client could not encode or send these records (a case validation missed).
            # Treated like a refusal: isolated and dead-lettered instead of crashing the
            # daemon, which would only replay the same records into the same error.
            log.exception("write_failed", target=sink.target, records=count)
            await self._drop_connection(sink)
            return _Refused(f"write failed: {type(exc).__name__}: {exc}")
        if status is ResponseStatus.DISCONNECTED:
            await self._drop_connection(sink)
            raise TransientWriteError("DISCONNECTED")
        self._set_connected(True, sink.target)
        if status == ResponseStatus.OK:
            self.last_write_ok = time.time()
            seconds = time.perf_counter() - started
            if isinstance(records, bytes):
                nbytes = len(records)
            else:
                nbytes = REQUEST_OVERHEAD + records_wire_size(records, record_overhead(write_mode))
            self._observer.batch_written(count, nbytes, seconds)
            return ResponseStatus.OK
        # The server closes the connection after an error answer.
        await self._drop_connection(sink)
        return _Refused(f"refused by TStorage: {status.name}")

    async def _current_sink(self) -> Sink:
        sink = self._sink
        if sink is not None and self._sink_settings != self._target:
            # Reconfigured (address, timeout or TLS): the next attempt uses a new connection.
            await self._drop_connection(sink)
            await sink.close()
            sink = self._sink = None
        if sink is None:
            sink = self._sink = self._sink_factory(self._target)
            self._sink_settings = self._target
        return sink

    async def _drop_connection(self, sink: Sink) -> None:
        await sink.reset()
        self._set_connected(False, sink.target)

    def _set_connected(self, connected: bool, target: str) -> None:
        if connected != self._connected:
            self._connected = connected
            self._observer.connection_state(target, connected)


def _select(records: list[Record[bytes]], indices: Sequence[int]) -> Sequence[Record[bytes]]:
    if isinstance(indices, range) and indices.step == 1:
        if indices.start == 0 and indices.stop == len(records):
            return records
        return records[indices.start : indices.stop]
    return [records[i] for i in indices]


def _source_counts(batch: Batch, indices: Sequence[int]) -> dict[str, int]:
    if isinstance(indices, range) and indices.step == 1:
        return batch.source_counts(indices.start, indices.stop)
    counts: dict[str, int] = {}
    for index in indices:
        source = batch.source_of(index)
        counts[source] = counts.get(source, 0) + 1
    return counts
