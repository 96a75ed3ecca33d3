"""acq (and the read-time stamp) of a line as a pure function of its place in the file.

With ``write_mode = "puta"`` the daemon writes the acq itself. If a line read again after a
crash or restart got a new acq, TStorage would store it twice; so the files source gives every
line the acq ``anchor.acq + (line - anchor.line)``, where anchors are fixed points of the
file's content kept in its checkpoint. The same line always gets the same acq and overwrites
itself, however often it is read. The same value, as Unix ns, stamps lines whose mapping has no
capture-time field, so their capture time is as stable as their acq.

An anchor is chosen when lines are about to be read past what the checkpoint file already
vouches for (``reserved_line``), and written to disk *before* any line numbered by it leaves
the source. Lines up to ``reserved_line`` may have been handed out with the anchors on disk;
lines after it never were, so only there may a new anchor begin. A new anchor is taken when
the acq the next line would get lags the clock by more than :data:`MAX_LAG_NS`, so acq stays
close to the time a line was read, as with acqs assigned at sealing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from tstorage_client import timestamp
from tstorage_client.record import Record

__all__ = ["MAX_LAG_NS", "LineClock"]

MAX_LAG_NS = 1_000_000_000
"""A new anchor is taken when the next line's acq would lag the clock by more than this."""


class LineClock:
    """The anchors of one file's content: line number -> acq (TStorage ns)."""

    __slots__ = ("_acqs", "_lines")

    def __init__(self, anchors: Sequence[Sequence[int]]) -> None:
        self._lines = [int(line) for line, _ in anchors]
        self._acqs = [int(acq) for _, acq in anchors]

    def __bool__(self) -> bool:
        return bool(self._lines)

    def acq(self, line: int) -> int:
        """The acq of line number ``line`` (1-based); needs an anchor at or before it."""
        index = bisect.bisect_right(self._lines, line) - 1
        if index < 0:
            raise ValueError(f"line {line} lies before the first anchor")
        return self._acqs[index] + line - self._lines[index]

    def stamp_ns(self, line: int) -> int:
        """The same instant as Unix ns (the capture time of a line without a time field)."""
        return timestamp.to_unix_ns(self.acq(line))

    def offset_for(self, first: int, last: int) -> int | None:
        """``acq - line`` when one anchor numbers every line of ``first .. last``, else None."""
        index = bisect.bisect_right(self._lines, first) - 1
        if index < 0:
            return None
        if index + 1 < len(self._lines) and self._lines[index + 1] <= last:
            return None
        return self._acqs[index] - self._lines[index]

    def with_acq(self, records: list[Record[bytes]], lines: Sequence[int]) -> list[Record[bytes]]:
        """Copies of ``records`` whose acq is that of their line (``lines[i]`` for record i)."""
        if not records:
            return records
        new = tuple.__new__
        offset = self.offset_for(lines[0], lines[-1])
        acqs = map(offset.__add__, lines) if offset is not None else map(self.acq, lines)
        # A record is the flat tuple (cid, mid, moid, cap, acq, payload).
        return [
            new(Record, (r[0], r[1], r[2], r[3], acq, r[5]))
            for r, acq in zip(records, acqs, strict=False)
        ]

    def add(self, line: int, now_acq: int) -> int:
        """A new anchor at ``line`` (after every existing one); returns its acq.

        Its acq is ``now_acq``, or just above the previous anchor's numbering when the clock
        is behind it, so acq never decreases along the file.
        """
        acq = now_acq
        if self._lines:
            if line <= self._lines[-1]:
                raise ValueError("a new anchor must follow the existing ones")
            acq = max(acq, self.acq(line - 1) + 1)
        self._lines.append(line)
        self._acqs.append(acq)
        return acq

    def prune(self, acked_line: int) -> None:
        """Forget anchors no unacknowledged line needs (keeps the one numbering the next)."""
        keep = bisect.bisect_right(self._lines, acked_line + 1) - 1
        if keep > 0:
            del self._lines[:keep]
            del self._acqs[:keep]

    def to_json(self) -> list[list[int]]:
        """``[[line, acq], ...]`` for the checkpoint file."""
        return [list(pair) for pair in zip(self._lines, self._acqs, strict=True)]
