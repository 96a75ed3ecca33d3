"""The durable disk spool: batches wait here, safe on disk, until TStorage has them.

It sits between the batcher and the writer.  The batcher appends each sealed batch; the
sources of a batch are acknowledged once it is durable; the writer streams batches out in
append order and commits each one after TStorage answered OK; fully committed segment files
are deleted.  After a crash or power cut, everything not committed is delivered again,
oldest first (at-least-once).  Design, on-disk format and failure behaviour: docs/spool.md.

Usage::

    spool = await Spool.open(directory, max_size=1 << 30, segment_size=16 << 20,
                             fsync="interval", fsync_interval=1.0,
                             overflow="block", min_free_space=256 << 20, on_drop=report)
    seq = await spool.append(payload, {"records": 500, "sources": {"mqtt": 500}})
    await spool.durable(seq)          # now acknowledge the batch's sources
    async for entry in spool.read():  # entry.seq, entry.payload, entry.meta, entry.appended_at
        ...                           # deliver it
        await spool.commit(entry.seq) # cumulative: everything up to entry.seq is done
    spool.stats()                     # SpoolStats: bytes, batches, oldest age, drops, quarantine
    spool_fit(directory, max_size=..., min_free_space=...)  # SpoolFit: .problems, .segment_size
    await spool.close()

Metadata is opaque JSON, except that ``"records"`` (int) and ``"sources"`` (name -> int) are
summed into :class:`DropReport` when ``overflow="drop_oldest"`` deletes unsent batches.
"""

from tstoraged.spool.fit import SpoolFit, segment_size_for, spool_fit
from tstoraged.spool.reports import (
    BatchTooLarge,
    DropReport,
    QuarantinedSegment,
    SpoolClosed,
    SpoolError,
    SpoolStats,
)
from tstoraged.spool.spool import FsyncPolicy, OverflowPolicy, Spool, SpoolEntry

__all__ = [
    "BatchTooLarge",
    "DropReport",
    "FsyncPolicy",
    "OverflowPolicy",
    "QuarantinedSegment",
    "Spool",
    "SpoolClosed",
    "SpoolEntry",
    "SpoolError",
    "SpoolFit",
    "SpoolStats",
    "segment_size_for",
    "spool_fit",
]
