"""Once mode: read every file matching the globs to its end, then finish (backfill imports).

Files are read in name order; a last line without newline counts. Positions are checkpointed
like in the other modes, so an interrupted import started again with the same state resumes
after the last acknowledged line, and files it completed are not read again. ``run`` returns
once every record is acknowledged; files that could not be read are listed in ``failed``.
"""

from __future__ import annotations

import asyncio
import glob
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tstoraged_files.checkpoint import CheckpointStore
from tstoraged_files.reader import FileReader, TooManyBadLines
from tstoraged_files.tail import excluded

if TYPE_CHECKING:
    from tstoraged.source import SourceContext
    from tstoraged_files.config import FilesConfig

__all__ = ["ImportProgress", "OnceImporter"]


@dataclass
class ImportProgress:
    """How far an import has got (for a progress bar and the final summary)."""

    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    records: int = 0
    """Records emitted so far."""
    rejected: int = 0
    """Lines rejected so far."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of files that could not be read to the end."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of files not read: already imported to their end, or empty."""
    resumed: list[tuple[str, int]] = field(default_factory=list)
    """(path, line) of files imported before up to that line, read on from there."""


class OnceImporter:
    """Reads the matching files once and returns when everything is acknowledged."""

    def __init__(self, config: FilesConfig, context: SourceContext, store: CheckpointStore) -> None:
        self.config = config
        self.context = context
        self.store = store
        self.progress = ImportProgress()

    def _paths(self) -> list[tuple[str, int]]:
        seen: set[tuple[int, int]] = set()
        paths = []
        for pattern in self.config.paths:
            for path in sorted(glob.glob(pattern, recursive=True)):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if excluded(path, self.config.exclude) or not stat.S_ISREG(st.st_mode):
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    paths.append((path, st.st_size))
        return paths

    async def run(self) -> None:
        """Import every file, then wait for the acknowledgement of the last records."""
        paths = self._paths()
        self.progress.files_total = len(paths)
        self.progress.bytes_total = sum(size for _, size in paths)
        if not paths:
            self.context.log.warning("glob_matched_nothing", paths=self.config.paths)
        for path, _ in paths:
            await self._import(path)
            self.progress.files_done += 1
        acknowledged = asyncio.Event()
        await self.context.emit([], acknowledged.set)
        await acknowledged.wait()
        self.context.log.info(
            "import_finished",
            files=self.progress.files_total,
            records=self.progress.records,
            rejected=self.progress.rejected,
            failed=len(self.progress.failed),
        )

    def close(self) -> None:
        """Nothing stays open between files."""

    async def _import(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._fail(path, f"cannot open: {exc}")
            return
        reader: FileReader | None = None
        try:
            st = os.fstat(fd)
            entry = self.store.for_whole_file(fd, st, path, self.config.fingerprint_bytes)
            if entry.offset and self.config.ignore_checkpoints:
                self.store.remove(entry)  # read it again from the start
                entry = self.store.for_whole_file(fd, st, path, self.config.fingerprint_bytes)
            self.progress.bytes_done += entry.offset
            if entry.offset >= st.st_size:
                reason = "empty" if not st.st_size else f"already imported ({entry.line} lines)"
                self.progress.skipped.append((path, reason))
                self.context.log.info("file_import_skipped", path=path, reason=reason)
                return
            if entry.offset:
                self.progress.resumed.append((path, entry.line))
            reader = FileReader(
                self.context, self.store, self.config, fd, path, entry, limit_bad_lines=True
            )
            while read := await reader.pump(1):
                self.progress.bytes_done += read
                self.progress.records += reader.records_emitted
                reader.records_emitted = 0
            await reader.finish()
        except (OSError, TooManyBadLines) as exc:
            self._fail(path, str(exc))
        finally:
            os.close(fd)
            if reader is not None:
                self.progress.records += reader.records_emitted
                self.progress.rejected += reader.parser.rejected

    def _fail(self, path: str, reason: str) -> None:
        self.context.log.error("file_import_failed", path=path, reason=reason)
        self.progress.failed.append((path, reason))
