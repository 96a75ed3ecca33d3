"""The disk spool as the stage between batcher and writer: :class:`SpoolStage`.

``submit`` appends a sealed batch to the :class:`~tstoraged.spool.Spool` and, once the append
is durable (fsynced, per the spool's fsync policy), fires the batch's acks: from then on the
sources may forget those records. The writer reads batches back from the spool in order and
commits each after TStorage answered OK (or it was dead-lettered), which frees the disk space.
After a crash or restart, every batch not committed is delivered again, oldest first.

A batch is stored as the PUT/PUTA request that will carry it (``wireform``), so the writer
sends those bytes as they are and decodes records only if TStorage refuses the batch; a
``puta`` request carries the acq assigned when the batch was sealed, through every replay.
Batches the writer must check record by record (an invalid key) or whose order a request
would change (cids interleaved) are stored as GET record frames instead (``int32 n``, full
key, payload), decoded with the client's fast record decoder; the frame's metadata says which.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import structlog

from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.protocol import server as wire_out
from tstorage_client.protocol.client import GetResponseParser, NeedData, RecordsBatch
from tstorage_client.protocol.codecs import codec_for
from tstorage_client.record import Record
from tstoraged.pipeline.batch import Batch
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.observer import PipelineObserver
from tstoraged.pipeline.settings import WriteMode
from tstoraged.pipeline.validation import invalid_records
from tstoraged.pipeline.wireform import decode_request, encode_request
from tstoraged.source import Ack
from tstoraged.spool import (
    DropReport,
    FsyncPolicy,
    OverflowPolicy,
    Spool,
    SpoolEntry,
    spool_fit,
)
from tstoraged.spool.fit import human_size

__all__ = ["CheckpointedAck", "SpoolStage", "decode_batch", "encode_batch"]

log = structlog.get_logger("tstoraged.spool")

_CODEC = codec_for(BytesPayloadType())
_HEAD = wire_out.encode_get_header()
_TAIL = wire_out.encode_get_end(0)


CHECKPOINTS_FILE = "checkpoints.json"
MAX_CHECKPOINTS_PER_SOURCE = 4096
ACKNOWLEDGED_FILE = "acknowledged.json"
"""``{"seq": n, "totals": {source: records}}``: the last batch whose acks fired, and the
running record count per source through it; written at most once per fsync interval, so that
recovery can tell a torn tail that held acknowledged batches from an interrupted append."""
REWIND_OTHERS = "*"
"""Name of the rewind entry for a source's positions not listed: read them from the start."""
REWIND = "rewind"
"""Key set in a durable checkpoint position when the source must go back to it, even behind
its own checkpoint: spooled records after it were lost to disk damage."""


@dataclass(frozen=True, eq=False)
class CheckpointedAck:
    """An emit's ack together with the source position it completes (see ``emit``)."""

    source: str
    checkpoint: Mapping[str, Any]
    ack: Ack | None = None

    def __call__(self) -> None:
        if self.ack is not None:
            self.ack()


def merge_checkpoints(
    into: dict[str, dict[str, Any]], update: Mapping[str, Mapping[str, Any]]
) -> None:
    """Later positions win; each source keeps its most recent names only (bounded)."""
    for source, entries in update.items():
        current = into.setdefault(str(source), {})
        for name, position in entries.items():
            current.pop(name, None)  # re-insert: dict order is recency
            current[name] = position
        while len(current) > MAX_CHECKPOINTS_PER_SOURCE:
            current.pop(next(iter(current)))


def _write_json_atomically(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as file:
        json.dump(data, file, separators=(",", ":"))
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def _counts(value: object) -> dict[str, int]:
    """A ``{source: count}`` mapping from metadata (anything else is ignored)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if type(v) is int}


def _add_lost(lost: dict[str, int], before: Mapping[str, int], after: Mapping[str, int]) -> None:
    """Add the records per source between two running counts."""
    for source, count in after.items():
        missing = count - before.get(source, 0)
        if missing > 0:
            lost[source] = lost.get(source, 0) + missing


_Acknowledged = tuple[int, dict[str, int], list[str]]
"""The last acknowledged seq, running record counts through it, replayable sources."""


def _read_acknowledged(path: Path) -> _Acknowledged | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or type(data.get("seq")) is not int:
        return None
    replayable = data.get("replayable")
    names = [str(n) for n in replayable] if isinstance(replayable, list) else []
    return data["seq"], _counts(data.get("totals")), names


FORMAT_REQUEST = "request"
"""Metadata ``format`` of a batch stored as its PUT/PUTA request (else: record frames)."""

_cid_of = itemgetter(0)  # a record is the flat (cid, mid, moid, cap, acq, payload)


def _sendable_as_is(records: list[Record[bytes]], write_mode: WriteMode) -> bool:
    """Valid keys, cids in order: the request then keeps the records' order (and sources)."""
    cids = list(map(_cid_of, records))
    return cids == sorted(cids) and not invalid_records(records, write_mode)


def encode_batch(records: list[Record[bytes]]) -> bytes:
    """The records as GET record frames (full keys)."""
    return wire_out.encode_records(records)


def decode_batch(payload: bytes) -> list[Record[bytes]]:
    """Records back from :func:`encode_batch`'s bytes; ValueError when they do not parse."""
    parser = GetResponseParser(_CODEC, memory_limit=len(payload) + 64)
    parser.feed(_HEAD + payload + _TAIL)
    records: list[Record[bytes]] = []
    while True:
        event = parser.next_event()
        if isinstance(event, RecordsBatch):
            records.extend(event.records)
        elif isinstance(event, NeedData):
            raise ValueError("spooled batch is truncated")
        elif event.is_ok():
            return records
        else:
            raise ValueError(f"spooled batch does not parse: {event.status.name}")


class SpoolStage:
    """Batcher -> disk spool -> writer, with acks at durability (see the module docstring)."""

    def __init__(
        self,
        spool: Spool,
        *,
        write_mode: WriteMode,
        dead_letters: DeadLetterFile,
        observer: PipelineObserver,
    ) -> None:
        self.spool = spool
        self._write_mode = write_mode
        self._dead_letters = dead_letters
        self._observer = observer
        self._closed = asyncio.Event()
        self._durable: collections.deque[tuple[int, Batch, dict[str, int]]] = collections.deque()
        self._durable_added = asyncio.Event()
        self._closing = False
        self._acker = asyncio.create_task(self._fire_acks_when_durable(), name="spool-acks")
        self._reader: AsyncIterator[SpoolEntry] | None = None
        self._reader_follows = True
        self._checkpoints_file = Path(spool.directory) / CHECKPOINTS_FILE
        # Positions of committed batches (persisted before each commit), and positions of
        # batches handed to the writer and not yet committed, by spool seq.
        self._committed_checkpoints = _read_json(self._checkpoints_file)
        self._pending_checkpoints: dict[int, dict[str, dict[str, Any]]] = {}
        self.recovered_checkpoints: dict[str, dict[str, Any]] = {}
        """Per source, the latest durable positions found at open (committed or spooled);
        positions marked ``REWIND`` where spooled records were lost after them."""
        self._totals: dict[str, int] = {}  # records appended per source, ever (meta "totals")
        self._acknowledged_file = Path(spool.directory) / ACKNOWLEDGED_FILE
        self._acknowledged: _Acknowledged | None = None
        self._acknowledged_written: _Acknowledged | None = None
        self._acknowledged_at = 0.0
        self._mark_interval = 1.0
        self._replayable: set[str] = set(self._committed_checkpoints)
        """Sources that give positions with their records: they can read lost ones again."""
        self.records_lost: dict[str, int] = {}
        """Acknowledged records of sources without positions, lost to spool damage at open."""

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        write_mode: WriteMode,
        dead_letters: DeadLetterFile,
        observer: PipelineObserver,
        max_size: int,
        fsync: FsyncPolicy,
        fsync_interval: float,
        overflow: OverflowPolicy,
        min_free_space: int,
    ) -> SpoolStage:
        """Open (recovering if needed) the spool in ``directory`` and wrap it."""
        holder: list[SpoolStage] = []
        acknowledged = _read_acknowledged(Path(directory) / ACKNOWLEDGED_FILE)
        fit = await asyncio.to_thread(
            spool_fit, directory, max_size=max_size, min_free_space=min_free_space
        )
        if fit.problems:
            log.warning(
                "spool_settings_exceeding_disk", directory=str(directory), problems=fit.problems
            )
        spool = await Spool.open(
            directory,
            max_size=max_size,
            # Space is reclaimed a whole segment at a time: segments are small against what
            # the spool can really hold (max_size, or the disk when that is smaller).
            segment_size=fit.segment_size,
            fsync=fsync,
            fsync_interval=fsync_interval,
            overflow=overflow,
            min_free_space=fit.effective_min_free_space,
            on_drop=lambda report: holder[0].on_drop(report),
            acknowledged_seq=acknowledged[0] if acknowledged is not None else 0,
        )
        stage = cls(spool, write_mode=write_mode, dead_letters=dead_letters, observer=observer)
        stage._mark_interval = fsync_interval
        holder.append(stage)
        await stage._recover_checkpoints(acknowledged)
        stage._report()
        return stage

    async def _recover_checkpoints(self, acknowledged: _Acknowledged | None) -> None:
        """Latest positions: committed ones, then those of every batch still in the spool.

        Seqs are consecutive, so a gap between two intact batches, or intact batches ending
        before the last acknowledged one, means batches were lost to disk damage. A source
        that stored positions is rewound to its last position before the first loss (it
        reads the lost records again); what other sources lost is counted and reported.
        """
        recovered: dict[str, dict[str, Any]] = {}
        merge_checkpoints(recovered, self._committed_checkpoints)
        before_loss: dict[str, dict[str, Any]] | None = None
        lost: dict[str, int] = {}
        lost_batches = 0
        previous: tuple[int, dict[str, int]] | None = None
        if acknowledged is not None:
            self._replayable.update(acknowledged[2])
        async for entry in self.spool.read(follow=False):
            replayable = entry.meta.get("replayable")
            if isinstance(replayable, list):
                self._replayable.update(map(str, replayable))
            totals = _counts(entry.meta.get("totals"))
            if previous is not None and entry.seq > previous[0] + 1:
                if before_loss is None:
                    before_loss = {k: dict(v) for k, v in recovered.items()}
                lost_batches += entry.seq - previous[0] - 1
                here = _counts(entry.meta.get("sources"))
                _add_lost(lost, previous[1], {k: v - here.get(k, 0) for k, v in totals.items()})
            checkpoints = entry.meta.get("checkpoints")
            if isinstance(checkpoints, dict):
                merge_checkpoints(recovered, checkpoints)
            previous = (entry.seq, totals)
        last_seq = previous[0] if previous is not None else self.spool.stats().committed_seq
        if acknowledged is not None and acknowledged[0] > last_seq:
            # The tail held acknowledged batches (a torn tail after a crash holds none).
            if before_loss is None:
                before_loss = {k: dict(v) for k, v in recovered.items()}
            lost_batches += acknowledged[0] - last_seq
            _add_lost(lost, previous[1] if previous is not None else {}, acknowledged[1])
        if previous is not None:
            self._totals = dict(previous[1])
        if acknowledged is not None:
            for source, count in acknowledged[1].items():
                self._totals[source] = max(self._totals.get(source, 0), count)
        if before_loss is not None:
            self._report_loss(recovered, before_loss, lost, lost_batches)
        self.recovered_checkpoints = recovered

    def _report_loss(
        self,
        recovered: dict[str, dict[str, Any]],
        before_loss: dict[str, dict[str, Any]],
        lost: dict[str, int],
        batches: int,
    ) -> None:
        """Rewind the sources that can replay; count and log what the others lost.

        A replaying source goes back to its last position before the first loss; names it
        has no such position for (``"*"``) are read again from their start.
        """
        rewound = sorted(s for s in lost if s in self._replayable)
        for source in rewound:
            positions = before_loss.get(source, {})
            recovered[source] = {
                **{name: {**position, REWIND: True} for name, position in positions.items()},
                REWIND_OTHERS: {REWIND: True},
            }
            log.warning(
                "spool_source_rewound",
                source=source,
                records=lost[source],
                positions=len(positions),
                reason="spooled batches lost to disk damage are read again from the source",
            )
        unreplayable = {s: n for s, n in lost.items() if s not in self._replayable and n > 0}
        for source, count in unreplayable.items():
            self._observer.spool_records_lost(source, count, "spool_damage")
        self.records_lost = unreplayable
        log.error(
            "spool_records_lost",
            batches=batches,
            records=sum(unreplayable.values()),
            by_source=unreplayable,
            rewound=rewound,
        )

    @property
    def pending_records(self) -> int:
        """Records held in memory by this stage: none — the backlog lives on disk."""
        return 0

    @property
    def persistent(self) -> bool:
        """True: every batch stays in the spool until the writer is done with it."""
        return True

    @property
    def backlog_records(self) -> int:
        """Records in the spool not yet delivered (the batch being delivered included)."""
        return self.spool.stats().records

    # -- BatchSink ----------------------------------------------------------------------------

    async def submit(self, batch: Batch) -> None:
        """Append ``batch`` durably (may wait when the spool is full and overflow is block)."""
        counts = batch.source_counts()
        for source, count in counts.items():
            self._totals[source] = self._totals.get(source, 0) + count
        totals = dict(self._totals)
        meta = {
            "records": len(batch.records),
            "sources": counts,
            # Running counts: a gap after disk damage is counted exactly from its neighbours.
            "totals": totals,
            "segments": batch.segments,
            "sealed": time.time(),
        }
        checkpoints: dict[str, dict[str, Any]] = {}
        for ack in batch.acks:
            if isinstance(ack, CheckpointedAck):
                merge_checkpoints(checkpoints, {ack.source: ack.checkpoint})
                self._replayable.add(ack.source)
        if self._replayable:
            meta["replayable"] = sorted(self._replayable)
        if checkpoints:
            # In the same durable frame as the records: a crash can never keep one without
            # the other.
            meta["checkpoints"] = checkpoints
        records = batch.records
        if _sendable_as_is(records, self._write_mode):
            # The request itself: the writer sends these bytes without re-encoding anything.
            meta["format"] = FORMAT_REQUEST
            payload = encode_request(records, self._write_mode)
        else:
            # Records the writer must check or reorder (invalid keys, interleaved cids).
            payload = encode_batch(records)
        seq = await self.spool.append(payload, meta)
        # The records live on disk now; only the acks wait for the fsync (with fsync =
        # "interval" that is up to a second of batches, which must not stay in memory).
        batch.records = []
        self._durable.append((seq, batch, totals))
        self._durable_added.set()
        self._report()

    def close(self) -> None:
        """No more batches will come; the writer drains what the spool holds, then stops."""
        self._closed.set()

    async def _fire_acks_when_durable(self) -> None:
        # One task, first in first out: acks fire in batch order even when several appends
        # become durable with the same fsync.
        while True:
            while not self._durable:
                if self._closing:
                    return
                self._durable_added.clear()
                await self._durable_added.wait()
            seq, batch, totals = self._durable[0]
            await self.spool.durable(seq)
            self._durable.popleft()
            # Rejects a source dead-lettered before this emit must be durable before its ack.
            self._dead_letters.sync()
            batch.fire_acks()
            self._acknowledged = (seq, totals, sorted(self._replayable))
            if time.monotonic() - self._acknowledged_at >= self._mark_interval:
                await self._write_acknowledged()

    async def _write_acknowledged(self) -> None:
        """Persist the last acknowledged seq (rate-limited; see ``ACKNOWLEDGED_FILE``)."""
        mark = self._acknowledged
        if mark is None or mark == self._acknowledged_written:
            return
        self._acknowledged_at = time.monotonic()
        try:
            await asyncio.to_thread(
                _write_json_atomically,
                self._acknowledged_file,
                {"seq": mark[0], "totals": mark[1], "replayable": mark[2]},
            )
        except OSError as exc:  # costs only the exactness of a later damage report
            log.warning("spool_acknowledged_write_failed", error=str(exc))
            return
        self._acknowledged_written = mark

    # -- BatchSource --------------------------------------------------------------------------

    async def next_batch(self) -> Batch | None:
        """The oldest batch not yet delivered; None once closed and the spool is empty."""
        while True:
            entry = await self._next_entry()
            if entry is None:
                return None
            records: list[Record[bytes]] = []
            encoded: bytes | None = None
            if entry.meta.get("format") == FORMAT_REQUEST:
                encoded = entry.payload  # sent as it is; decoded only if TStorage refuses it
            else:
                try:
                    records = decode_batch(entry.payload)
                except ValueError as exc:
                    # The frame's checksum was fine, so this is not disk damage but a bug or a
                    # foreign file: keep the bytes in the dead-letter file and go on.
                    log.error("spool_batch_decode_failed", seq=entry.seq, error=str(exc))
                    self._dead_letters.write_raw(
                        "spool", entry.payload, f"undecodable spooled batch: {exc}", origin=None
                    )
                    await self.spool.commit(entry.seq)
                    continue
            checkpoints = entry.meta.get("checkpoints")
            if isinstance(checkpoints, dict) and checkpoints:
                self._pending_checkpoints[entry.seq] = checkpoints
            count = len(records) if encoded is None else int(entry.meta.get("records", 0))
            segments = [(str(s), int(n)) for s, n in entry.meta.get("segments", [])]
            if sum(n for _, n in segments) != count:
                segments = [("spool", count)]
            now = time.monotonic()
            return Batch(
                seq=entry.seq,
                write_mode=self._write_mode,
                records=records,
                segments=segments,
                acks=[],  # fired when the batch became durable in the spool
                nbytes=len(entry.payload),
                created=now,
                sealed=now,
                encoded=encoded,
                encoded_count=count if encoded is not None else 0,
                decoder=decode_request,
            )

    async def _next_entry(self) -> SpoolEntry | None:
        while True:
            if self._reader is None:
                self._reader_follows = not self._closed.is_set()
                self._reader = self.spool.read(follow=self._reader_follows).__aiter__()
            step = asyncio.ensure_future(anext(self._reader, None))
            if self._reader_follows:
                closed = asyncio.ensure_future(self._closed.wait())
                done, _ = await asyncio.wait({step, closed}, return_when=asyncio.FIRST_COMPLETED)
                closed.cancel()
                if step not in done:
                    # Closing: stop following new appends; read what is left, then end.
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    self._reader = None
                    continue
            entry = await step
            if entry is None and not self._reader_follows:
                return None
            if entry is not None:
                return entry

    async def done(self, batch: Batch) -> None:
        """The writer finished ``batch``: commit it, freeing its space.

        Its source positions are persisted first, since committing may delete the frame that
        holds them before the sources' own checkpoint files have caught up.
        """
        checkpoints = self._pending_checkpoints.pop(batch.seq, None)
        if checkpoints:
            merge_checkpoints(self._committed_checkpoints, checkpoints)
            await asyncio.to_thread(
                _write_json_atomically, self._checkpoints_file, self._committed_checkpoints
            )
        await self.spool.commit(batch.seq)
        self._report()

    # -- lifecycle ----------------------------------------------------------------------------

    def _report(self) -> None:
        stats = self.spool.stats()
        self._observer.spool_state(stats.bytes, stats.batches, stats.oldest_age_s)

    def waiting_for(self) -> str | None:
        """What blocked appends wait for, in words for ``/readyz``; None when not blocked."""
        stats = self.spool.stats()
        if not stats.blocked:
            return None
        reason = {
            "max_size": "max_size reached",
            "min_free_space": f"free disk space below min_free_space = "
            f"{human_size(stats.min_free_space)}",
            "enospc": "the disk is full",
        }.get(stats.blocked_reason or "", stats.blocked_reason or "full")
        if stats.free_bytes is not None and stats.blocked_reason != "max_size":
            reason += f", {human_size(stats.free_bytes)} free"
        if stats.batches:
            return (
                f"spool full ({reason}): sources wait until TStorage takes the backlog of "
                f"{stats.batches} batches"
            )
        return (
            f"spool cannot store anything ({reason}) and holds nothing whose delivery would "
            "free space: free disk space or lower [spool] min_free_space / max_size"
        )

    def on_drop(self, report: DropReport) -> None:
        """Called by the spool when ``overflow = "drop_oldest"`` deleted unsent batches."""
        if not report.batches and not report.records:
            return  # only batches the writer holds in memory left the disk: nothing is lost
        for source, count in report.by_source.items():
            self._observer.records_dropped(source, count, f"spool full ({report.reason})")
        log.warning(
            "spool_dropped_oldest",
            batches=report.batches,
            records=report.records,
            bytes=report.bytes,
            reason=report.reason,
            by_source=dict(report.by_source),
        )

    async def aclose(self) -> None:
        """Fire the acks of what is durable, stop the ack task, close the spool."""
        self._closing = True
        self._durable_added.set()
        try:
            await self._acker
        except Exception as exc:  # an fsync failed: those batches cannot be promised
            log.error("spool_acks_failed", error=repr(exc), unacknowledged=len(self._durable))
        await self._write_acknowledged()
        await self.spool.close()
