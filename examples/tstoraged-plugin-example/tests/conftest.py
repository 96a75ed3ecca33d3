"""A recording SourceContext: what a source hands to the core, captured for assertions.

The core's real context compiles the mapping and feeds the pipeline; a plugin's unit tests
only need to see which fields, rejects and emits the source produces for a given input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from tstorage_client.record import Key, Record
from tstoraged import Ack, SourceContext


@dataclass
class Mapped:
    fields: dict[str, Any]
    origin: str
    received_ns: int | None


@dataclass
class RecordingContext(SourceContext):
    """Records every call; ``map`` returns a placeholder record for each row."""

    name: str = "test"
    state_dir: Path = Path()
    mapped: list[Mapped] = field(default_factory=list)
    rejected: list[tuple[object, str, str]] = field(default_factory=list)
    emitted: list[list[Record[bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = structlog.get_logger().bind(source=self.name)

    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        self.mapped.append(Mapped(dict(fields), origin, received_ns))
        return Record._make((Key._make((0, 0, len(self.mapped), 0, 0)), b""))

    def reject(self, raw: object, reason: str, *, origin: str) -> None:
        self.rejected.append((raw, reason, origin))

    async def emit(self, records: Sequence[Record[bytes]], ack: Ack | None = None) -> None:
        self.emitted.append(list(records))
        if ack is not None:
            ack()


@pytest.fixture
def context(tmp_path: Path) -> RecordingContext:
    return RecordingContext(state_dir=tmp_path)
