"""The ``files`` source: tail mode or drop-directory mode over one checkpoint store."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from tstoraged.source import Source
from tstoraged_files.checkpoint import CheckpointStore
from tstoraged_files.config import FilesConfig
from tstoraged_files.drop import DropDirectory
from tstoraged_files.once import OnceImporter
from tstoraged_files.tail import TailFollower

if TYPE_CHECKING:
    from tstoraged.source import SourceConfig, SourceContext

__all__ = ["FilesSource"]


class FilesSource(Source):
    """Reads measurement files (CSV, JSON Lines, record CSV) and emits their records.

    Positions are committed per file in ``context.state_dir`` only when acknowledged, so a
    restart resumes exactly after the last durable line.
    """

    config_model = FilesConfig

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        if not isinstance(config, FilesConfig):
            raise TypeError(f"FilesSource needs a FilesConfig, got {type(config).__name__}")
        super().__init__(config, context)
        self.files_config = config
        self.worker: TailFollower | DropDirectory | OnceImporter | None = None
        """The running mode's worker (for status and tests); None before ``run``."""

    async def run(self) -> None:
        """Follow or ingest files until cancelled; in once mode, return when done."""
        config = self.files_config
        store = CheckpointStore(self.context.state_dir, interval=config.checkpoint_interval)
        moved = store.merge_durable(self.context.durable_checkpoints())
        if moved:
            self.context.log.info("positions_recovered_from_spool", files=moved)
        worker: TailFollower | DropDirectory | OnceImporter
        if config.mode == "tail":
            worker = TailFollower(config, self.context, store)
        elif config.mode == "drop":
            worker = DropDirectory(config, self.context, store)
        else:
            worker = OnceImporter(config, self.context, store)
        self.worker = worker
        writer = asyncio.create_task(
            store.run(self.context.log), name=f"{self.context.name}-checkpoints"
        )
        try:
            await worker.run()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            worker.close()
            store.close()
