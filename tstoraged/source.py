"""The source interface: what a source plugin implements and what the core gives it.

A source turns its input (file lines, MQTT messages, Modbus registers, ...) into *named fields*,
lets the core's compiled mapping turn those into records (``context.map``), and hands records
to the pipeline with ``await context.emit(records, ack)``. ``emit`` waits while the pipeline
is full, so backpressure reaches the source. ``ack`` is called once those records are durable
(in the spool when it is enabled, otherwise acknowledged by TStorage); a source commits its own
position (file offset, broker ack) only then.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tstoraged.config.units import Duration
from tstoraged.mapping.model import CapMapping, KeyMapping, PayloadMapping

if TYPE_CHECKING:
    import structlog

    from tstorage_client.record import Record
    from tstoraged.findings import Finding
    from tstoraged.observe.source_metrics import SourceMetrics

__all__ = ["Ack", "RestartPolicy", "Source", "SourceConfig", "SourceContext", "SourceType"]

Ack = Callable[[], object]
"""Called without arguments, on the event loop, when the records of one ``emit`` are durable."""

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_name(value: str) -> str:
    if not SOURCE_NAME.match(value):
        raise ValueError(
            "a name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or "
            "digit (it becomes part of file paths and metric labels)"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""A name used in paths, logs and metric labels (sources, devices, ...); errors say the rule."""


class RestartPolicy(BaseModel):
    """``restart = { ... }`` of a source: how the core restarts it after ``run()`` raised.

    The first restart waits ``delay``; each further failure doubles the wait up to
    ``max_delay``. A restarted source that runs ``healthy_after`` without failing is healthy
    again: the daemon is ready again, ``source_recovered`` is logged and the wait starts from
    ``delay`` at the next failure.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay: Duration = Field(default=1.0, gt=0, description="Wait before the first restart.")
    max_delay: Duration = Field(default=60.0, gt=0, description="Longest wait between restarts.")
    healthy_after: Duration = Field(
        default=30.0, gt=0, description="Running this long after a restart counts as recovered."
    )

    @model_validator(mode="after")
    def _delay_order(self) -> RestartPolicy:
        if self.max_delay < self.delay:
            raise ValueError("max_delay is smaller than delay")
        return self


class SourceConfig(BaseModel):
    """Settings every source has. A source type's model subclasses this and adds its own keys.

    Unknown keys are errors. ``key``, ``cap`` and ``payload`` describe how the source's named
    fields become a TStorage key, capture time and payload (see ``docs/configuration.md``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="Source type, as registered by a plugin.")
    name: Name = Field(
        description="Unique name of this source; appears in logs, metrics and state paths.",
    )
    enabled: bool = Field(default=True, description="A disabled source is validated, not run.")
    key: KeyMapping = Field(description="How fields become cid, mid and moid.")
    cap: CapMapping = Field(
        default_factory=CapMapping, description="How the capture time is found."
    )
    payload: PayloadMapping = Field(description="How fields become the payload bytes.")
    lookups: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Named lookup tables (text -> integer) that key parts can refer to.",
    )
    restart: RestartPolicy = Field(
        default_factory=RestartPolicy,
        description="Backoff of restarts after run() raised, and when a restart counts as healthy.",
    )

    def check_environment(self) -> list[Finding]:
        """What ``tstoraged check`` should say about the machine this source would run on.

        Looked at without side effects (nothing created, opened for writing or sent): a
        directory that does not exist, a file this user cannot read, a glob that matches
        nothing. Paths are relative to this source's table (``("paths", 0)``). The daemon
        logs the findings when the source starts. Default: nothing to say.
        """
        return []


class SourceContext(ABC):
    """What the core gives a running source. Implemented by the core; plugins only call it."""

    name: str
    """The source's configured name."""
    log: structlog.typing.FilteringBoundLogger
    """A logger bound with ``source=<name>``."""
    state_dir: Path
    """A private, existing directory for this source's checkpoints; survives restarts."""

    @abstractmethod
    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        """Turn named fields into a record with the source's compiled mapping.

        ``received_ns`` (Unix ns) is the input's receive time, used as capture time when the
        mapping takes no ``cap`` field; default: now. Sources that map many rows at once give
        each row its own receive time, or rows of one meter mapped together would share a key.

        On failure (missing field, value out of range, bad timestamp, ...) the input is counted,
        logged (rate-limited) and written to the dead-letter file with ``origin`` (e.g.
        ``"/data/a.csv:17"``) and the reason, and None is returned: the source goes on.
        """

    def map_many(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        origin_of: Callable[[int], str],
        raw_of: Callable[[int], object] | None = None,
    ) -> list[Record[bytes]]:
        """Map many rows at once (much cheaper per row than :meth:`map`); skip failures.

        A row that fails is dead-lettered like in :meth:`map`, with ``origin_of(index)`` as
        its origin and ``raw_of(index)`` (default: the row) as its raw input; the result
        holds the records of the other rows, in order. Rows map with the receive time of
        the call, so rows that need their own capture time carry it in a field.
        """
        records = []
        for index, row in enumerate(rows):
            raw = raw_of(index) if raw_of is not None else None
            record = self.map(row, origin=origin_of(index), raw=raw)
            if record is not None:
                records.append(record)
        return records

    @abstractmethod
    def reject(self, raw: object, reason: str, *, origin: str) -> None:
        """Report input the source itself could not parse: counted, logged, dead-lettered."""

    @abstractmethod
    async def emit(
        self,
        records: Sequence[Record[bytes]],
        ack: Ack | None = None,
        *,
        checkpoint: Mapping[str, Any] | None = None,
    ) -> None:
        """Hand records to the pipeline; waits while it is full.

        ``ack`` is called once every record of this call is durable. Acks of one source are
        called in the order of their ``emit`` calls. ``records`` may be empty: the ack then
        follows the previous emits (useful to commit a position that produced only rejects).

        ``checkpoint`` is the source's position after these records, as JSON-able
        ``{name: position}`` entries (e.g. ``{file identity: offset}``). With the disk spool
        enabled the core stores it in the same durable write as the records, so after a
        crash :meth:`durable_checkpoints` knows it even when the source's own checkpoint file
        was not updated yet: resuming from there neither loses nor repeats a record.
        """

    def durable_checkpoints(self) -> Mapping[str, Any]:
        """The latest durable ``checkpoint`` entries of this source kept by the core.

        Read once at start: for each name, resume from the later of this position and the
        source's own checkpoint — except for a position that carries ``"rewind": true``:
        records spooled after it were lost to disk damage, so a source that can replay goes
        back to exactly that position (what it cannot replay is counted as lost by the core).
        Empty when the core keeps none (spool disabled).
        """
        return {}

    # -- reporting: what operators see of the source -------------------------------------------

    def set_details(self, details: Mapping[str, Any]) -> None:  # noqa: B027 (optional; default ignores)
        """Publish the source's own state, replacing what it published before.

        ``details`` is a JSON-able mapping (e.g. ``{"connection": "connected",
        "last_message": 1764612000.5}`` or one entry per device); ``/status`` shows it under
        ``sources.<name>.details`` and ``tstoraged status`` lists it below the source table.
        Cheap enough to call on every state change; keep it small (it is served as is).
        """

    def set_problem(self, problem: str | None) -> None:  # noqa: B027 (optional; default ignores)
        """Say that the source cannot do its work right now, and why; ``None`` clears it.

        For trouble a source handles itself without raising (a broker it keeps reconnecting
        to, every device of a bus silent): while a problem is set the daemon is not ready
        (``/readyz`` answers 503 with the source and the problem) and ``tstoraged status``
        shows it. A source that raises from :meth:`Source.run` need not call this: the core
        reports the failure itself. The problem is cleared when the source is restarted.
        """

    @property
    def metrics(self) -> SourceMetrics:
        """Counters and gauges of this source's own (``tstoraged_<name>{source=...}``).

        See :mod:`tstoraged.observe.source_metrics`. The default goes nowhere.
        """
        from tstoraged.observe.source_metrics import NullSourceMetrics

        return NullSourceMetrics()


class Source(ABC):
    """Base class of source plugins: one instance per configured ``[[sources]]`` entry."""

    config_model: ClassVar[type[SourceConfig]] = SourceConfig

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    async def run(self) -> None:
        """Produce records until cancelled.

        Returning means the source is finished (a one-shot import). Raising means it failed:
        the core logs the error, counts it (``tstoraged_source_failures_total``), shows it in
        ``tstoraged status``, reports the daemon not ready, and restarts the source with a new
        instance after the backoff of ``config.restart``; other sources are unaffected.
        Cancellation is the normal stop: clean up and re-raise ``CancelledError``.
        """


@dataclass(frozen=True)
class SourceType:
    """A source type contributed by a plugin through ``tstoraged_source_types``."""

    name: str
    source_class: type[Source]
    config_model: type[SourceConfig]
    description: str = ""
