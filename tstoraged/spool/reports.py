"""What the spool tells the application: statistics, drop reports, quarantine entries, errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class SpoolError(Exception):
    """The spool cannot do what was asked (closed, or the disk failed to persist data)."""


class SpoolClosed(SpoolError):
    """The spool was closed while the call was waiting or before it was made."""


class BatchTooLarge(SpoolError, ValueError):
    """A single batch is larger than the whole spool may ever be (``max_size``)."""


@dataclass(frozen=True, slots=True)
class QuarantinedSegment:
    """A damaged segment file kept under ``quarantine/`` for inspection."""

    file: str
    """Path of the quarantined copy."""
    reason: str
    """What was wrong, and where (byte offsets)."""
    quarantined_at: float
    """Unix time of the quarantine."""


@dataclass(frozen=True, slots=True)
class DropReport:
    """Batches deleted unsent by the ``drop_oldest`` overflow policy, in one go."""

    batches: int
    bytes: int
    records: int
    """Sum of the ``"records"`` metadata of the dropped batches."""
    by_source: Mapping[str, int]
    """Sum of the ``"sources"`` metadata (source name -> records) of the dropped batches."""
    reason: str
    """Why room was needed: ``max_size``, ``min_free_space`` or ``enospc``; or ``in_flight``
    for batches the writer held when their segment was dropped and then did not commit
    (a new ``read()`` started), so they could not be delivered after all."""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool for metrics, ``/readyz`` and ``tstoraged status``."""

    bytes: int
    """Bytes of segment files on disk (what ``max_size`` bounds)."""
    batches: int
    """Batches appended and not yet committed."""
    records: int
    """Records of those batches (their metadata's ``records``)."""
    oldest_age_s: float | None
    """Age of the oldest uncommitted batch (from its append time); None when empty."""
    segments: int
    committed_seq: int
    next_seq: int
    durable_seq: int
    """Every batch up to this seq has been fsynced."""
    blocked: bool
    """An append is waiting for room (overflow ``block``, or nothing left to drop)."""
    blocked_reason: str | None
    """Why, while blocked: ``max_size``, ``min_free_space`` or ``enospc``."""
    free_bytes: int | None
    """Free bytes of the file system while blocked (None otherwise, or when unknown)."""
    min_free_space: int
    dropped_batches: int
    dropped_bytes: int
    dropped_records: int
    torn_tails_cut: int
    """Incomplete tails cut at open (after a crash or power loss) since this process started."""
    quarantine_events: int
    """Segments quarantined since this process started."""
    quarantined: tuple[QuarantinedSegment, ...] = field(default_factory=tuple)
    """Every segment in ``quarantine/``, including those of earlier runs."""


def meta_counts(meta: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
    """Records and per-source records a batch carries, by the metadata convention.

    The spool stores metadata opaquely; by convention ``"records"`` is an int and ``"sources"``
    maps source name to record count.  Anything else is ignored rather than trusted.
    """
    records = meta.get("records")
    sources = meta.get("sources")
    by_source: dict[str, int] = {}
    if isinstance(sources, Mapping):
        by_source = {str(k): v for k, v in sources.items() if type(v) is int}
    return (records if type(records) is int else 0), by_source
