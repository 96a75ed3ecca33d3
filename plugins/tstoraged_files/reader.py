"""Reading one open file: chunks in, records emitted, acknowledged positions committed."""

from __future__ import annotations

import asyncio
import os
from functools import partial
from typing import TYPE_CHECKING

from tstorage_client import timestamp
from tstoraged_files.formats import BOM, LineParser, make_parser
from tstoraged_files.identity import fingerprint_of
from tstoraged_files.lineclock import MAX_LAG_NS, LineClock
from tstoraged_files.lines import LineBlock, LineSplitter

if TYPE_CHECKING:
    from tstoraged.source import SourceContext
    from tstoraged_files.checkpoint import CheckpointStore, FileCheckpoint
    from tstoraged_files.config import FilesConfig

__all__ = ["FileReader", "TooManyBadLines", "find_end_of_last_line", "read_first_line"]

RESERVE_BLOCKS = 4
"""Lines numbered ahead of what is read, in blocks of the current size (fewer file writes)."""
SAVE_RETRY_S = 1.0
"""Wait before writing the checkpoint file again after it failed (e.g. disk full)."""


class TooManyBadLines(Exception):
    """A file had more rejected lines than ``max_bad_lines``; the message says so."""


class FileReader:
    """Reads an open file from a position, emits its records a chunk at a time.

    Each ``emit`` carries an ack that moves ``entry`` to the end of that chunk's last complete
    line, so the checkpoint never runs ahead of acknowledged data. ``fd`` is owned by the
    caller.
    """

    def __init__(
        self,
        context: SourceContext,
        store: CheckpointStore,
        config: FilesConfig,
        fd: int,
        path: str,
        entry: FileCheckpoint,
        *,
        position: tuple[int, int] | None = None,
        limit_bad_lines: bool = False,
    ) -> None:
        """Read from ``position`` (offset, line number), by default the checkpoint's."""
        offset, line = (entry.offset, entry.line) if position is None else position
        max_bad_lines = config.max_bad_lines if limit_bad_lines else None
        self.context = context
        self.store = store
        self.fd = fd
        self.entry = entry
        self.read_offset = offset
        self.chunk_bytes = config.read_chunk_bytes
        self.max_bad_lines = max_bad_lines
        self.records_emitted = 0
        self.splitter = LineSplitter(offset, line, max_line_bytes=config.max_line_bytes)
        # The fingerprint is extended from the bytes actually read, so it always describes
        # content this reader emitted, even if the file is rewritten between two polls.
        self._fingerprint_bytes = config.fingerprint_bytes
        self._head = os.pread(fd, min(offset, self._fingerprint_bytes), 0)
        header_line = None
        if offset > 0 and config.format == "csv" and config.csv.header:
            header_line = read_first_line(fd, config.max_line_bytes, config.encoding)
        self.parser: LineParser = make_parser(context, path, config, header_line)
        self.clock = LineClock(entry.anchors)
        self.parser.line_clock = self.clock

    @property
    def path(self) -> str:
        """The name the file was last seen under (used in reject origins)."""
        return self.parser.path

    @path.setter
    def path(self, value: str) -> None:
        self.parser.path = value
        self.entry.path = value

    @property
    def position(self) -> tuple[int, int]:
        """Offset and line number just past the last complete line emitted."""
        return self.splitter.end_offset, self.splitter.line

    async def pump(self, max_chunks: int) -> int:
        """Read and emit up to ``max_chunks`` chunks of new data; return the bytes read."""
        total = 0
        for _ in range(max_chunks):
            data = os.pread(self.fd, self.chunk_bytes, self.read_offset)
            if not data:
                break
            if len(self._head) < self._fingerprint_bytes and len(self._head) == self.read_offset:
                self._extend_fingerprint(data)
            self.read_offset += len(data)
            total += len(data)
            await self._emit(self.splitter.feed(data))
        return total

    def _extend_fingerprint(self, data: bytes) -> None:
        self._head += data[: self._fingerprint_bytes - len(self._head)]
        if len(self._head) > self.entry.fingerprint.length:
            self.entry.fingerprint = fingerprint_of(self._head)
            self.store.changed()

    async def finish(self) -> None:
        """The file is complete: emit its last line even without a final newline."""
        await self._emit(self.splitter.finish())

    async def _emit(self, block: LineBlock) -> None:
        if block.empty:
            return
        if block.count:
            await self._number_lines(block.first_line, block.end_line, block.count)
        records = self.parser.parse_block(block)
        if self.max_bad_lines is not None and self.parser.rejected > self.max_bad_lines:
            # Checked before emitting: the chunk that crosses the limit is not delivered.
            raise TooManyBadLines(f"more than max_bad_lines={self.max_bad_lines} lines rejected")
        records = self.clock.with_acq(records, self.parser.record_lines)
        ack = partial(self.store.advance, self.entry, block.end_offset, block.end_line)
        self.records_emitted += len(records)
        # The same position, stored by the core together with the records (spool): after a
        # crash the source resumes there even if the ack never reached the checkpoint file.
        position = {**self.entry.to_json(), "offset": block.end_offset, "line": block.end_line}
        checkpoint = {self.store.durable_name(self.entry): position}
        await self.context.emit(records, ack, checkpoint=checkpoint)

    async def _number_lines(self, first: int, last: int, count: int) -> None:
        """Make sure lines ``first .. last`` have their acq on disk before they leave.

        See :mod:`tstoraged_files.lineclock`: a new anchor may begin only after
        ``reserved_line``; the reservation runs a few blocks ahead so that the checkpoint
        file is written about once per :data:`~tstoraged_files.lineclock.MAX_LAG_NS` or
        per few chunks, not per block.
        """
        entry = self.entry
        floor = entry.reserved_line + 1
        if last < floor:
            return  # numbered already (read again after a restart)
        start = max(first, floor)
        now = timestamp.now_ns()
        if not self.clock or now - self.clock.acq(start) > MAX_LAG_NS:
            # Above every acq this source may have used, so files never share an acq.
            self.clock.add(start, max(now, self.store.acq_high() + 1))
            self.clock.prune(entry.line)
        entry.anchors = self.clock.to_json()
        entry.reserved_line = last + count * RESERVE_BLOCKS
        await self._save_checkpoints()

    async def _save_checkpoints(self) -> None:
        """Write the checkpoint file now; on failure wait and try again (lines wait too)."""
        failed = False
        while True:
            try:
                self.store.save()
            except OSError as exc:
                if not failed:
                    self.context.log.error(
                        "checkpoints_write_failed",
                        path=str(self.store.path),
                        error=str(exc),
                        action="reading waits until the checkpoint file can be written",
                    )
                    self.context.set_problem(f"cannot write checkpoints: {exc}")
                failed = True
                await asyncio.sleep(SAVE_RETRY_S)
                continue
            if failed:
                self.context.set_problem(None)
            return


def read_first_line(fd: int, max_line_bytes: int, encoding: str) -> str | None:
    """Line 1 of the file (the CSV header) when it is complete and decodable."""
    head = os.pread(fd, max_line_bytes + 1, 0)
    newline = head.find(b"\n")
    if newline < 0:
        return None
    try:
        return head[:newline].decode(encoding).removeprefix(BOM)
    except UnicodeDecodeError:
        return None


def find_end_of_last_line(fd: int, size: int, chunk_bytes: int) -> tuple[int, int]:
    """Offset just past the last newline before ``size``, and the number of lines before it.

    Used to start at the end of a file (``start_at = "end"``) with correct line numbers.
    """
    offset = lines = end = 0
    while offset < size:
        data = os.pread(fd, min(chunk_bytes, size - offset), offset)
        if not data:
            break
        count = data.count(b"\n")
        if count:
            lines += count
            end = offset + data.rfind(b"\n") + 1
        offset += len(data)
    return end, lines
