"""The core's side of the source contract: :class:`CoreSourceContext`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from tstorage_client.record import Record
from tstoraged.mapping.compile import CompiledMapping
from tstoraged.observe.reasons import MAPPING_FAILED, reject_reason
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.observer import PipelineObserver
from tstoraged.pipeline.pipeline import Emit
from tstoraged.pipeline.spooled import CheckpointedAck
from tstoraged.source import Ack, SourceContext

if TYPE_CHECKING:
    from tstoraged.observe.source_metrics import SourceMetrics

__all__ = ["CoreSourceContext", "SourceReporter", "source_state_dir"]

# Everything a compiled mapping may raise on bad field values; anything else is a bug.
_MAPPING_FAILURES = (ValueError, TypeError, KeyError, OverflowError, ArithmeticError)


def source_state_dir(state_dir: Path, name: str) -> Path:
    """The private state directory of source ``name`` (checkpoints), created if missing."""
    path = state_dir / "sources" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class SourceReporter(Protocol):
    """Where a source's own reports go (the daemon's :class:`tstoraged.observe.metrics.Metrics`)."""

    def source_problem(self, source: str, problem: str | None) -> None:
        """The source cannot do its work right now (None: it can again)."""

    def source_details(self, source: str, details: Mapping[str, Any]) -> None:
        """The source's own state for ``/status``."""

    def source_metrics(self, source: str) -> SourceMetrics:
        """The source's own counters and gauges."""


class CoreSourceContext(SourceContext):
    """Maps fields with the source's compiled mapping, dead-letters failures, emits records."""

    def __init__(
        self,
        name: str,
        *,
        mapping: CompiledMapping,
        emit: Emit,
        dead_letters: DeadLetterFile,
        observer: PipelineObserver,
        state_dir: Path,
        durable_checkpoints: Mapping[str, Any] | None = None,
        reporter: SourceReporter | None = None,
    ) -> None:
        self.name = name
        self.log = structlog.get_logger("tstoraged.source").bind(source=name)
        self.state_dir = state_dir
        self._durable_checkpoints = dict(durable_checkpoints or {})
        self._mapping = mapping
        self._map_one = mapping.map_one  # the generated function: one call less per record
        self._emit = emit
        self._dead_letters = dead_letters
        self._observer = observer
        self._reporter = reporter
        self._metrics: SourceMetrics | None = None

    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        try:
            return self._map_one(fields, received_ns)
        except _MAPPING_FAILURES as exc:
            self._dead_letter(fields if raw is None else raw, str(exc), origin, MAPPING_FAILED)
            return None

    def map_many(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        origin_of: Callable[[int], str],
        raw_of: Callable[[int], object] | None = None,
    ) -> list[Record[bytes]]:
        records, failures = self._mapping.map_many(rows)
        for index, reason in failures:
            raw = raw_of(index) if raw_of is not None else rows[index]
            self._dead_letter(raw, reason, origin_of(index), MAPPING_FAILED)
        return records

    def reject(self, raw: object, reason: str, *, origin: str) -> None:
        self._dead_letter(raw, reason, origin, reject_reason(reason))

    def _dead_letter(self, raw: object, reason: str, origin: str, label: str) -> None:
        self._dead_letters.write_raw(self.name, _jsonable(raw), reason, origin=origin)
        # The observer is told the fixed label (its metrics); the file and the log keep it all.
        self._observer.records_rejected(self.name, 1, label)
        # Repeats of the same reason are rate-limited by the logging setup.
        self.log.warning("input_rejected", origin=origin, reason=reason, kind=label)

    async def emit(
        self,
        records: Sequence[Record[bytes]],
        ack: Ack | None = None,
        *,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> None:
        if checkpoint:
            ack = CheckpointedAck(self.name, dict(checkpoint), ack)
        await self._emit(records, ack)

    def durable_checkpoints(self) -> Mapping[str, Any]:
        return self._durable_checkpoints

    def set_details(self, details: Mapping[str, Any]) -> None:
        if self._reporter is not None:
            self._reporter.source_details(self.name, details)

    def set_problem(self, problem: str | None) -> None:
        if self._reporter is not None:
            self._reporter.source_problem(self.name, problem)

    @property
    def metrics(self) -> SourceMetrics:
        if self._metrics is None:
            if self._reporter is not None:
                self._metrics = self._reporter.source_metrics(self.name)
            else:
                self._metrics = super().metrics
        return self._metrics


def _jsonable(raw: object) -> object:
    """Field dicts may hold any values; keep what JSON can show, repr the rest."""
    if isinstance(raw, Mapping):
        return {
            str(k): v if isinstance(v, str | int | float | bool | None) else repr(v)
            for k, v in raw.items()
        }
    return raw
