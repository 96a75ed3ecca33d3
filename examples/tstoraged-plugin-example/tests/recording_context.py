"""A recording SourceContext: the core's real compiled mapping, with emits and rejects kept.

The daemon's context also feeds the pipeline; a plugin's unit tests only need to see which
records, rejects and acks the source produces for a given input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from tstorage_client.record import Record
from tstoraged import Ack, SourceConfig, SourceContext
from tstoraged.mapping.compile import MappingError, compile_mapping
from tstoraged.plugins import PluginManager


@dataclass
class RecordingContext(SourceContext):
    """Maps with the source's compiled mapping; records every emit and reject."""

    config: SourceConfig
    state_dir: Path
    emitted: list[list[Record[bytes]]] = field(default_factory=list)
    rejected: list[tuple[object, str, str]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.config.name
        self.log = structlog.get_logger().bind(source=self.name)
        # The built-in codecs, found through entry points like any plugin.
        codecs = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs"}).codecs
        self._map_one = compile_mapping(self.config, codecs).map_one

    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        self.origins.append(origin)
        try:
            return self._map_one(fields, received_ns)
        except MappingError as exc:
            self.reject(raw if raw is not None else dict(fields), str(exc), origin=origin)
            return None

    def reject(self, raw: object, reason: str, *, origin: str) -> None:
        self.rejected.append((raw, reason, origin))

    async def emit(self, records: Sequence[Record[bytes]], ack: Ack | None = None) -> None:
        self.emitted.append(list(records))
        if ack is not None:
            ack()
