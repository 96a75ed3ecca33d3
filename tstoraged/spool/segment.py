"""One segment file of the spool as the running process knows it (no I/O here)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from tstoraged.spool.frame import FrameHeader
from tstoraged.spool.reports import meta_counts

SEGMENT_SUFFIX = ".seg"
_NAME = re.compile(r"^(\d{20})\.seg$")


def segment_name(base_seq: int) -> str:
    """File name of the segment whose first frame has ``base_seq``; names sort like seqs."""
    return f"{base_seq:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The base seq of a segment file name, or None if ``name`` is not a segment."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


@dataclass(eq=False, slots=True)
class Segment:
    """Bookkeeping for one segment: where it is, which frames it holds, what they count."""

    path: str
    size: int = 0
    """Bytes of valid frames (the file is never longer once recovery or a write finished)."""
    frames: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ns: int = 0
    records: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    committed_records: int = 0
    committed_by_source: dict[str, int] = field(default_factory=dict)
    fd: int | None = None
    """Write descriptor while this is the active segment."""
    deleted: bool = False

    @property
    def name(self) -> str:
        """The file name (without directory)."""
        return os.path.basename(self.path)

    def add(self, header: FrameHeader, meta: dict[str, object]) -> None:
        """Account for a frame appended or found at the end of this segment."""
        if not self.frames:
            self.first_seq = header.seq
            self.first_ns = header.appended_ns
        self.frames += 1
        self.last_seq = header.seq
        self.size += header.size
        _add_counts(self, meta, committed=False)

    def add_committed(self, meta: dict[str, object]) -> None:
        """Account for a frame of this segment that the writer committed."""
        _add_counts(self, meta, committed=True)

    def uncommitted(self, committed_seq: int) -> int:
        """Frames with a seq above ``committed_seq`` (exact unless salvage left seq gaps)."""
        if not self.frames or self.last_seq <= committed_seq:
            return 0
        if self.first_seq > committed_seq:
            return self.frames
        return self.last_seq - committed_seq


def _add_counts(seg: Segment, meta: dict[str, object], *, committed: bool) -> None:
    records, by_source = meta_counts(meta)
    target = seg.committed_by_source if committed else seg.by_source
    if committed:
        seg.committed_records += records
    else:
        seg.records += records
    for source, count in by_source.items():
        target[source] = target.get(source, 0) + count
