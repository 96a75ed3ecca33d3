"""An in-test SourceContext for the files source: collects emits, acks on demand, keeps rejects."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from tstoraged_files import FilesConfig, FilesSource, checkpoint
from tstoraged_files.reader import FileReader
from tstoraged_files.tail import TailFollower

from tstorage_client.record import Key, Record
from tstoraged.mapping.compile import compile_mapping
from tstoraged.plugins import PluginManager
from tstoraged.source import Ack, SourceContext

Mapper = Callable[[Mapping[str, Any], int | None], Record[bytes]]

DEADLINE_S = 20.0


def meter_mapper(fields: Mapping[str, Any], received_ns: int | None = None) -> Record[bytes]:
    """Test mapping: cid 1, mid = meter, moid = channel, cap = ts, payload = value text."""
    key = Key._make((1, int(fields["meter"]), int(fields.get("channel", 0)), int(fields["ts"]), -1))
    return Record._make((key, str(fields["value"]).encode()))


def compiled_mapper(config: FilesConfig) -> Mapper:
    """The core's compiled mapping for ``config`` (with the installed codecs)."""
    codecs = PluginManager.from_entry_points().codecs
    return compile_mapping(config, codecs).map_one


@dataclass
class Emit:
    """One ``emit`` call as the source made it."""

    records: list[Record[bytes]]
    ack: Ack | None


@dataclass
class Reject:
    """One rejected input (by the source or by the mapping)."""

    origin: str
    reason: str
    raw: object


@dataclass
class HarnessContext(SourceContext):
    """Collects what a source emits; acks at once (``auto_ack``) or when the test says."""

    state_dir: Path
    name: str = "files-test"
    mapper: Mapper = meter_mapper
    auto_ack: bool = True
    emits: list[Emit] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    keep_records: bool = True
    """False: count records without keeping them (volume tests, so memory shows the source's)."""
    emitted: int = 0
    """Number of records emitted so far."""
    cancel_at_emit: int | None = None
    """Cancel the source inside its n-th ``emit`` (1-based), before that emit is accepted."""
    acked: int = 0
    """Number of emits acknowledged so far (acks are given in emit order)."""
    checkpoints: dict[str, Any] = field(default_factory=dict)
    """The latest position per name given with ``emit(..., checkpoint=...)``."""
    durable: dict[str, Any] = field(default_factory=dict)
    """What ``durable_checkpoints()`` answers (as a spool would after a crash)."""

    def __post_init__(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)  # the core hands out an existing one
        self.log = structlog.get_logger().bind(source=self.name)
        self._changed = asyncio.Event()

    @property
    def records(self) -> list[Record[bytes]]:
        """Every record emitted, in order."""
        return [r for e in self.emits for r in e.records]

    def caps(self) -> list[int]:
        """The capture times of every emitted record (the tests number lines by ``ts``)."""
        return [r.key.cap for r in self.records]

    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        try:
            return self.mapper(fields, received_ns)
        except (KeyError, ValueError) as exc:
            self.reject(raw, f"mapping: {exc!r}", origin=origin)
            return None

    def durable_checkpoints(self) -> Mapping[str, Any]:
        return self.durable

    def reject(self, raw: object, reason: str, *, origin: str) -> None:
        self.rejects.append(Reject(origin, reason, raw))
        self._changed.set()

    async def emit(
        self,
        records: Sequence[Record[bytes]],
        ack: Ack | None = None,
        *,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> None:
        if checkpoint:
            self.checkpoints.update(checkpoint)
        if self.cancel_at_emit is not None and len(self.emits) + 1 >= self.cancel_at_emit:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # as the daemon stopping the source while emit waits for room
            await asyncio.sleep(0)
        self.emitted += len(records)
        self.emits.append(Emit(list(records) if self.keep_records else [], ack))
        if self.auto_ack:
            self.ack_through(len(self.emits))
        self._changed.set()
        await asyncio.sleep(0)  # a real pipeline is an await point too

    def ack_through(self, count: int) -> None:
        """Acknowledge emits up to ``count`` (in order, as the pipeline does)."""
        for emit in self.emits[self.acked : count]:
            if emit.ack is not None:
                emit.ack()
        self.acked = max(self.acked, count)

    async def wait_until(
        self, predicate: Callable[[], bool], what: str = "", within_s: float = DEADLINE_S
    ) -> None:
        """Wait (bounded) until ``predicate()`` holds; it is re-checked after every emit."""
        deadline = time.monotonic() + within_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

    async def wait_records(self, count: int) -> None:
        """Wait until at least ``count`` records were emitted."""
        await self.wait_until(lambda: self.emitted >= count, f"{count} records")


def files_config(**settings: Any) -> FilesConfig:
    """A FilesConfig with test-friendly defaults (fast polling, the meter mapping keys)."""
    base: dict[str, Any] = {
        "type": "files",
        "name": "files-test",
        "poll_interval": 0.01,
        "checkpoint_interval": 0.01,
    }
    mode = settings.get("mode", "tail")
    if mode == "tail":
        base["rotate_wait"] = 0.2
    elif mode == "drop":
        base["settle_time"] = 0.05
    if settings.get("format") != "records":
        base["key"] = {"cid": 1, "mid": "{meter}", "moid": "{channel}"}
        base["cap"] = {"field": "ts", "unit": "ns", "epoch": "tstorage"}
        base["payload"] = {"codec": "raw", "field": "value"}
    return FilesConfig.model_validate({**base, **settings})


class RunningSource:
    """A FilesSource running as a task; ``stop()`` cancels it as the daemon does."""

    def __init__(self, config: FilesConfig, context: HarnessContext) -> None:
        self.source = FilesSource(config, context)
        self.context = context
        self.task = asyncio.create_task(self.source.run())

    async def stop(self) -> None:
        """Cancel the source and wait for it to finish; re-raise anything but cancellation."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def source_followed(self) -> list[FileReader]:
        """Readers of the files the running source follows now (tail mode)."""
        worker = self.source.worker
        if not isinstance(worker, TailFollower):
            return []
        return [f.reader for f in worker.followed.values()]

    async def __aenter__(self) -> RunningSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def new_process() -> None:
    """Forget the checkpoint stores of this process: the next source reads the state from
    disk, as after a daemon restart (within one process a new instance takes over the old
    instance's positions in memory)."""
    checkpoint._STORES.clear()


def csv_lines(start: int, stop: int, *, meters: int = 3) -> str:
    """Data lines ``ts,meter,channel,value`` for ts in [start, stop)."""
    return "".join(f"{i},{i % meters},{i % 2},{i * 0.5}\n" for i in range(start, stop))


CSV_HEADER = "ts,meter,channel,value\n"
