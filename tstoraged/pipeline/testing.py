"""In-memory stand-ins for tests of the pipeline and of stages built on it (e.g. a spool).

:class:`ScriptedSink` is a :class:`~tstoraged.pipeline.sink.Sink` that keeps what it is given
and can be told to fail; :class:`RecordingObserver` keeps what the pipeline reports.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from tstorage_client.record import Record
from tstorage_client.response import ResponseStatus
from tstoraged.pipeline.settings import TargetSettings, WriteMode
from tstoraged.pipeline.wireform import decode_request

__all__ = ["RecordingObserver", "ScriptedSink"]


class ScriptedSink:
    """A sink that stores records; scripted outcomes and refusals simulate TStorage's answers.

    ``script`` is consumed one entry per write: a status other than OK is returned, an
    exception is raised, OK writes normally; once it is empty every write succeeds unless
    ``refuse`` flags a record (then the whole write answers ERROR, as TStorage refuses a
    request). ``gate``, when set, is awaited at the start of each write (to hold writes).
    """

    def __init__(
        self,
        script: Sequence[ResponseStatus | BaseException] = (),
        *,
        refuse: Callable[[Record[bytes]], bool] | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.target = "memory:0"
        self.script = list(script)
        self.refuse = refuse
        self.gate = gate
        self.written: list[Record[bytes]] = []
        self.attempts: list[list[Record[bytes]]] = []
        self.modes: list[WriteMode] = []
        self.resets = 0
        self.closed = False
        self.write_started = asyncio.Event()

    def factory(self, settings: TargetSettings) -> ScriptedSink:
        """A sink factory for the writer that always hands out this sink."""
        self.target = settings.address
        return self

    async def write(
        self, records: Sequence[Record[bytes]], write_mode: WriteMode
    ) -> ResponseStatus:
        """Record the attempt, then answer as scripted."""
        self.write_started.set()
        if self.gate is not None:
            await self.gate.wait()
        self.attempts.append(list(records))
        self.modes.append(write_mode)
        if self.script:
            outcome = self.script.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not ResponseStatus.OK:
                return outcome
        if self.refuse is not None and any(map(self.refuse, records)):
            return ResponseStatus.ERROR
        self.written.extend(records)
        return ResponseStatus.OK

    async def write_encoded(self, request: bytes) -> ResponseStatus:
        """Decode the request, then answer like :meth:`write`."""
        mode: WriteMode = "puta" if request[:4] == b"\x06\x00\x00\x00" else "put"
        return await self.write(decode_request(request), mode)

    async def reset(self) -> None:
        """Count the reconnect."""
        self.resets += 1

    async def close(self) -> None:
        """Mark closed."""
        self.closed = True


class RecordingObserver:
    """A :class:`~tstoraged.pipeline.observer.PipelineObserver` that keeps what it is told."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        self.dead_lettered: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.dead_letter_reasons: list[str] = []
        self.batches: list[tuple[int, int, float]] = []
        self.retries: list[str] = []
        self.connection: list[tuple[str, bool]] = []
        self.max_queue_records = 0
        self.max_queue_bytes = 0
        self.spool: list[tuple[int, int, float | None]] = []

    def records_received(self, source: str, count: int) -> None:
        self.received[source] += count

    def records_rejected(self, source: str, count: int, reason: str) -> None:
        self.rejected[source] += count

    def records_written(self, source: str, count: int) -> None:
        self.written[source] += count

    def records_dead_lettered(self, source: str, count: int, reason: str) -> None:
        self.dead_lettered[source] += count
        self.dead_letter_reasons.append(reason)

    def records_dropped(self, source: str, count: int, reason: str) -> None:
        self.dropped[source] += count

    def batch_written(self, records: int, nbytes: int, seconds: float) -> None:
        self.batches.append((records, nbytes, seconds))

    def write_retried(self, reason: str) -> None:
        self.retries.append(reason)

    def connection_state(self, target: str, connected: bool) -> None:
        self.connection.append((target, connected))

    def queue_depth(self, records: int, nbytes: int) -> None:
        self.max_queue_records = max(self.max_queue_records, records)
        self.max_queue_bytes = max(self.max_queue_bytes, nbytes)

    def spool_state(self, nbytes: int, batches: int, oldest_age_s: float | None) -> None:
        self.spool.append((nbytes, batches, oldest_age_s))
