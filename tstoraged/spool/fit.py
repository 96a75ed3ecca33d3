"""Whether a spool's size settings fit the file system it lives on, and the segment size.

Space is released a whole segment at a time, so a segment must be small against what the
spool can really occupy: ``max_size``, or less when the file system (minus ``min_free_space``)
is smaller. :func:`spool_fit` measures that once (``tstoraged check``, start-up) and says what
cannot work, in words an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A leaf helper without imports of its own: messages speak the config's binary units.
from tstoraged.observe.humanize import human_bytes as human_size
from tstoraged.spool.segment import SEGMENT_SUFFIX

__all__ = ["SpoolFit", "human_size", "segment_size_for", "spool_fit"]

MIN_SEGMENT = 256 << 10
MAX_SEGMENT = 64 << 20
SEGMENTS_PER_SPOOL = 16
"""A spool holds at least this many segments when full, so delivery frees space in steps of
at most 1/16 of it."""


@dataclass(frozen=True, slots=True)
class SpoolFit:
    """The file system under a spool directory against the spool's size settings."""

    directory: str
    filesystem_bytes: int
    """Size of the whole file system."""
    free_bytes: int
    """Bytes an unprivileged writer may still use there now."""
    spool_bytes: int
    """Bytes of segment files the spool already holds (they count as room it has)."""
    max_size: int
    min_free_space: int

    @property
    def effective_min_free_space(self) -> int:
        """The floor the spool keeps: ``min_free_space``, or, where that is not below the size
        of the whole file system (the default 100 MiB on a small disk), the
        :attr:`suggested_min_free_space` — an impossible floor would block every append for
        good, and no delivery could ever lift it."""
        if self.min_free_space >= self.filesystem_bytes:
            return self.suggested_min_free_space
        return self.min_free_space

    @property
    def capacity(self) -> int:
        """Bytes the spool can really grow to now: ``max_size``, or less if the disk is smaller."""
        usable = self.free_bytes + self.spool_bytes - self.effective_min_free_space
        return max(0, min(self.max_size, usable))

    @property
    def problems(self) -> list[str]:
        """What cannot work with these settings on this file system (empty when all fits)."""
        where = f"the file system of {self.directory}"
        size = human_size(self.filesystem_bytes)
        problems = []
        min_free = self.effective_min_free_space
        if min_free != self.min_free_space:
            problems.append(
                f"min_free_space = {human_size(self.min_free_space)} is not below the size of "
                f"{where} ({size}): no batch could ever be spooled, so the spool keeps "
                f"{human_size(min_free)} free instead (5 %); set min_free_space to a few "
                "percent of the file system"
            )
        elif self.free_bytes + self.spool_bytes <= min_free:
            problems.append(
                f"min_free_space = {human_size(min_free)} but only "
                f"{human_size(self.free_bytes)} of {size} are free on {where}: the spool cannot "
                "store a batch until other files are removed"
            )
        room = max(0, self.free_bytes + self.spool_bytes - min_free)
        if self.max_size > room:
            problems.append(
                f"max_size = {human_size(self.max_size)} cannot fit {where} ({size}, "
                f"{human_size(self.free_bytes)} free, keeping {human_size(min_free)} free): "
                f"the spool will be full at about {human_size(room)}; set max_size to at "
                "most that"
            )
        return problems

    @property
    def suggested_min_free_space(self) -> int:
        """A min_free_space that suits this file system: 5 % of it, at least 1 MiB."""
        return max(1 << 20, self.filesystem_bytes // 20)

    @property
    def segment_size(self) -> int:
        """The segment size for this spool (see :func:`segment_size_for`)."""
        return segment_size_for(self.max_size, self.capacity)


def segment_size_for(max_size: int, capacity: int | None = None) -> int:
    """Segment size: 1/16 of what the spool can hold, within 256 KiB .. 64 MiB, <= max_size."""
    room = max_size if capacity is None else min(max_size, capacity)
    size = min(MAX_SEGMENT, max(MIN_SEGMENT, room // SEGMENTS_PER_SPOOL))
    return min(max_size, size)


def _existing(path: str) -> str:
    """``path`` or its nearest existing parent (``check`` runs before anything is created)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _spool_bytes(directory: str) -> int:
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    total = 0
    for name in names:
        if name.endswith(SEGMENT_SUFFIX):
            try:
                total += os.stat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def spool_fit(
    directory: str | os.PathLike[str],
    *,
    max_size: int,
    min_free_space: int,
    statvfs: Callable[[str], Any] = os.statvfs,
) -> SpoolFit:
    """Measure the file system of ``directory`` (which need not exist yet). Blocking I/O."""
    path = os.fspath(directory)
    st = statvfs(_existing(path))
    return SpoolFit(
        directory=path,
        filesystem_bytes=int(st.f_blocks) * int(st.f_frsize),
        free_bytes=int(st.f_bavail) * int(st.f_frsize),
        spool_bytes=_spool_bytes(path),
        max_size=max_size,
        min_free_space=min_free_space,
    )
