"""Cutting a byte stream into complete lines, with exact offsets and line numbers.

Sans-I/O: bytes go in (``feed``), a :class:`LineBlock` of complete lines comes out. The
unfinished last line is held back until its newline arrives, so the block's ``end_offset`` is
always a position a reader can resume from. A line longer than ``max_line_bytes`` is never
held whole: once the held-back tail exceeds the bound, it is dropped and the splitter skips to
the next newline, reporting the line (number and first bytes) as oversized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LineBlock", "LineSplitter"]

PREFIX_BYTES = 80
"""How much of an oversized line is kept to show in the reject."""


@dataclass(slots=True)
class LineBlock:
    """Complete lines ``first_line .. first_line + count - 1`` and where they end in the file."""

    data: bytes
    """The lines joined by ``\\n``, without the final newline; empty when ``count`` is 0."""
    first_line: int
    """1-based number of the first line in ``data``."""
    count: int
    """Number of lines in ``data``."""
    end_offset: int
    """File offset just past everything this block accounts for: a safe resume position."""
    oversized: list[tuple[int, bytes]] = field(default_factory=list)
    """Lines skipped for exceeding the bound that ended in this feed: (line number, first bytes)."""

    @property
    def end_line(self) -> int:
        """Number of the last line this block accounts for (lines before the resume position)."""
        return self.first_line + self.count - 1

    @property
    def empty(self) -> bool:
        """True when the block accounts for no line at all (not even an oversized one)."""
        return self.count == 0 and not self.oversized


class LineSplitter:
    """Splits bytes read from ``offset`` (where line ``line + 1`` starts) into complete lines."""

    def __init__(self, offset: int = 0, line: int = 0, *, max_line_bytes: int = 65_536) -> None:
        self._end = offset  # offset just past the last complete line handed out
        self._line = line  # number of that line
        self._pending = b""
        self._skipping = False  # inside an oversized line, discarding until its newline
        self._skipped = 0
        self._skip_prefix = b""
        self._max = max_line_bytes

    @property
    def end_offset(self) -> int:
        """Offset just past the last complete line handed out."""
        return self._end

    @property
    def line(self) -> int:
        """Number of the last complete line handed out."""
        return self._line

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unfinished line held (or being skipped) after ``end_offset``."""
        return len(self._pending) + self._skipped

    def feed(self, data: bytes) -> LineBlock:
        """Take the next bytes of the stream; return the lines they complete."""
        oversized: list[tuple[int, bytes]] = []
        if self._skipping:
            newline = data.find(b"\n")
            if newline < 0:
                self._skipped += len(data)
                return LineBlock(b"", self._line + 1, 0, self._end)
            self._end += self._skipped + newline + 1
            self._line += 1
            oversized.append((self._line, self._skip_prefix))
            self._skipping = False
            self._skipped = 0
            buf = data[newline + 1 :]
        else:
            buf = self._pending + data if self._pending else data
        first_line = self._line + 1
        last = buf.rfind(b"\n")
        if last < 0:
            block, count, self._pending = b"", 0, buf
        else:
            block = buf[:last]
            count = block.count(b"\n") + 1
            self._pending = buf[last + 1 :]
            self._end += last + 1
            self._line += count
        if len(self._pending) > self._max:
            self._start_skipping()
        return LineBlock(block, first_line, count, self._end, oversized)

    def finish(self) -> LineBlock:
        """End of a complete file: its last line counts even without a newline."""
        first_line = self._line + 1
        if self._skipping:
            self._end += self._skipped
            self._line += 1
            block = LineBlock(b"", first_line, 0, self._end, [(self._line, self._skip_prefix)])
            self._skipping = False
            self._skipped = 0
            return block
        if not self._pending:
            return LineBlock(b"", first_line, 0, self._end)
        data, self._pending = self._pending, b""
        self._end += len(data)
        self._line += 1
        return LineBlock(data, first_line, 1, self._end)

    def _start_skipping(self) -> None:
        self._skipping = True
        self._skipped = len(self._pending)
        self._skip_prefix = self._pending[:PREFIX_BYTES]
        self._pending = b""
