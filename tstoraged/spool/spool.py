"""The spool itself: durable append, in-order streaming read, commit, overflow handling."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from tstoraged.spool.diskio import REAL_DISK, Cursor, DiskIO, lock_directory
from tstoraged.spool.durability import Durability
from tstoraged.spool.frame import (
    HEADER_SIZE,
    FrameError,
    FrameHeader,
    decode_header,
    decode_meta,
    encode_header,
    encode_meta,
)
from tstoraged.spool.quarantine import Quarantine
from tstoraged.spool.recovery import recover, write_cursor
from tstoraged.spool.reports import (
    BatchTooLarge,
    DropReport,
    QuarantinedSegment,
    SpoolClosed,
    SpoolError,
    SpoolStats,
    meta_counts,
)
from tstoraged.spool.scan import read_body, resync_in_file
from tstoraged.spool.segment import Segment, segment_name
from tstoraged.spool.wakeup import Wakeup

FsyncPolicy = Literal["batch", "interval"]
OverflowPolicy = Literal["block", "drop_oldest"]

# Frames up to this size are written / read directly on the event loop (a page-cache copy of
# a few hundred KiB takes well under a millisecond); larger ones go to a worker thread.
_INLINE_IO_MAX = 256 * 1024
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

log = structlog.get_logger("tstoraged.spool")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One batch as the reader delivers it."""

    seq: int
    payload: bytes
    meta: dict[str, Any]
    appended_at: float
    """Unix time when the batch was appended."""


@dataclass(frozen=True, slots=True)
class _Delivered:
    """A batch handed to the reader and not yet committed (for commit-time accounting)."""

    seq: int
    segment: Segment
    meta: dict[str, Any]
    appended_ns: int


class Spool:
    """A durable, size-bounded FIFO of opaque batches in a directory of segment files.

    Create with :meth:`open`; see the package docstring for the whole API and guarantees.
    Use from one event loop.  Appends may come from many tasks; read/commit from one writer.
    """

    def __init__(
        self,
        directory: str,
        *,
        max_size: int,
        segment_size: int,
        fsync: FsyncPolicy,
        fsync_interval: float,
        overflow: OverflowPolicy,
        min_free_space: int,
        on_drop: Callable[[DropReport], None] | None,
        disk: DiskIO,
        space_recheck_interval: float,
        quarantine: Quarantine,
        segments: list[Segment],
        cursor: Cursor,
    ) -> None:
        """Use :meth:`open`, which recovers the directory first."""
        self.directory = directory
        self._max_size = max_size
        self._segment_size = segment_size
        self._fsync = fsync
        self._fsync_interval = fsync_interval
        self._overflow = overflow
        self._min_free_space = min_free_space
        self._on_drop = on_drop
        self._disk = disk
        self._recheck = space_recheck_interval
        self._quarantine = quarantine
        self._segments = segments
        self._active: Segment | None = None
        self._disk_bytes = sum(s.size for s in segments)
        self._committed = cursor.committed_seq
        self._next_seq = cursor.next_seq
        self._persisted_cursor: Cursor | None = None
        self._durability = Durability(directory, disk, cursor.next_seq - 1)
        self._append_lock = asyncio.Lock()
        self._cursor_lock = asyncio.Lock()
        self._cursor_dirty = asyncio.Event()
        self._appended = Wakeup()  # readers wait on it when caught up
        self._freed = Wakeup()  # blocked appends wait on it
        self._delivered: deque[_Delivered] = deque()
        # Seq ranges the reader skipped as damaged: a commit reaching one absorbs it, so a
        # damaged last batch does not stay "uncommitted" forever.
        self._skipped: deque[tuple[int, int]] = deque()
        self._last_committed_ns = 0
        self._reader_generation = 0
        self._closed = False
        self._blocked = False
        self._tasks: list[asyncio.Task[None]] = []
        self._dropped = [0, 0, 0]  # batches, bytes, records
        self.torn_tails_cut = 0
        self.quarantine_events = 0
        self._quarantined = quarantine.list()
        self._lock_fd: int | None = None

    @classmethod
    async def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        max_size: int = 1 << 30,
        segment_size: int = 16 << 20,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        overflow: OverflowPolicy = "block",
        min_free_space: int = 0,
        on_drop: Callable[[DropReport], None] | None = None,
        disk: DiskIO = REAL_DISK,
        space_recheck_interval: float = 1.0,
    ) -> Spool:
        """Open (creating, or recovering after a crash) the spool in ``directory``.

        ``max_size``: bytes of segment files the spool may occupy.  ``segment_size``: a new
        segment file is started when the active one would grow past it; space is reclaimed a
        whole segment at a time, so keep it well below ``max_size``.  ``fsync``: ``"batch"``
        (append returns once durable) or ``"interval"`` (fsync every ``fsync_interval`` s;
        :meth:`durable` says when a batch made it).  ``overflow``: ``"block"`` (append waits
        for commits) or ``"drop_oldest"`` (the oldest segments are deleted; ``on_drop`` gets a
        :class:`DropReport`).  ``min_free_space``: bytes the file system must keep free;
        falling below counts as full.  ``disk``: injectable system calls (tests).
        ``space_recheck_interval``: how often a full spool re-checks free space that something
        other than a commit may have freed.
        """
        if fsync not in ("batch", "interval"):
            raise ValueError(f"fsync must be 'batch' or 'interval', not {fsync!r}")
        if overflow not in ("block", "drop_oldest"):
            raise ValueError(f"overflow must be 'block' or 'drop_oldest', not {overflow!r}")
        if not 0 < segment_size <= max_size:
            raise ValueError("need 0 < segment_size <= max_size")
        if fsync_interval <= 0 or space_recheck_interval <= 0 or min_free_space < 0:
            raise ValueError("intervals must be positive and min_free_space not negative")
        path = os.fspath(directory)
        lock_fd = await asyncio.to_thread(lock_directory, path)
        try:
            quarantine = Quarantine(path, disk)
            recovered = await asyncio.to_thread(recover, path, disk, quarantine)
        except BaseException:
            os.close(lock_fd)
            raise
        spool = cls(
            path,
            max_size=max_size,
            segment_size=segment_size,
            fsync=fsync,
            fsync_interval=fsync_interval,
            overflow=overflow,
            min_free_space=min_free_space,
            on_drop=on_drop,
            disk=disk,
            space_recheck_interval=space_recheck_interval,
            quarantine=quarantine,
            segments=recovered.segments,
            cursor=recovered.cursor,
        )
        spool._lock_fd = lock_fd
        spool.torn_tails_cut = recovered.torn_tails_cut
        spool.quarantine_events = len(recovered.quarantined)
        spool._tasks.append(asyncio.create_task(spool._cursor_loop(), name="spool-cursor"))
        if fsync == "interval":
            spool._tasks.append(asyncio.create_task(spool._flush_loop(), name="spool-fsync"))
        log.info(
            "spool_opened",
            directory=path,
            batches=sum(s.uncommitted(spool._committed) for s in recovered.segments),
            bytes=spool._disk_bytes,
            torn_tails_cut=recovered.torn_tails_cut,
            quarantined=len(recovered.quarantined),
        )
        return spool

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- appending -------------------------------------------------------------------------

    async def append(
        self, payload: bytes | bytearray | memoryview, meta: Mapping[str, Any] | None = None
    ) -> int:
        """Store one batch; return its seq.

        With ``fsync="batch"`` the batch is durable when this returns; with ``"interval"``
        await :meth:`durable` before acknowledging its sources.  When the spool is full this
        waits (``block``) or deletes the oldest segments (``drop_oldest``).  An append
        cancelled before its write completed stores nothing (a write in progress is finished
        and cut off again); one cancelled while waiting for its fsync is stored.
        """
        self._check_usable()
        meta_bytes = encode_meta(dict(meta or {}))
        frame_size = HEADER_SIZE + len(meta_bytes) + len(payload)
        if frame_size > self._max_size:
            raise BatchTooLarge(
                f"a {frame_size}-byte batch can never fit a {self._max_size}-byte spool"
            )
        async with self._append_lock:
            seq = await self._store(meta_bytes, payload, frame_size)
        if self._fsync == "batch":
            await self._durability.sync_through(seq)
        else:
            # A small append never suspends otherwise; yield so that a producer appending
            # in a tight loop cannot starve the rest of the event loop.
            await asyncio.sleep(0)
        return seq

    async def durable(self, seq: int) -> None:
        """Return once batch ``seq`` (and every earlier one) is on disk, or was dropped.

        Raises :class:`SpoolError` if an fsync failed: the batch cannot be promised.
        """
        if self._fsync == "batch":
            await self._durability.sync_through(seq)
        else:
            await self._durability.wait_durable(seq)

    async def _store(
        self, meta_bytes: bytes, payload: bytes | bytearray | memoryview, frame_size: int
    ) -> int:
        while True:
            self._check_usable()
            await self._reclaim_active()
            problem = self._room_problem(frame_size)
            if problem is None:
                segment = await self._segment_for(frame_size)
                header, head = await self._encode(meta_bytes, payload, frame_size)
                try:
                    await self._write(segment, [head, meta_bytes, payload], frame_size)
                except OSError as exc:
                    if exc.errno not in _DISK_FULL_ERRNOS:
                        raise
                    problem = "enospc"
                else:
                    self._account_append(segment, header, meta_bytes)
                    return header.seq
            if self._overflow == "drop_oldest" and await self._drop_oldest(problem):
                continue
            if not self._blocked:
                self._blocked = True
                log.warning("spool_full_appends_waiting", reason=problem, bytes=self._disk_bytes)
            await self._freed.wait(self._recheck)

    async def _encode(
        self, meta_bytes: bytes, payload: bytes | bytearray | memoryview, frame_size: int
    ) -> tuple[FrameHeader, bytes]:
        """Header of the next frame; the payload CRC of a large batch is computed off-loop."""
        args = (self._next_seq, time.time_ns(), meta_bytes, payload)
        if frame_size > _INLINE_IO_MAX:
            return await asyncio.to_thread(encode_header, *args)
        return encode_header(*args)

    def _account_append(self, segment: Segment, header: FrameHeader, meta_bytes: bytes) -> None:
        segment.add(header, decode_meta(meta_bytes))
        self._disk_bytes += header.size
        self._next_seq = header.seq + 1
        assert segment.fd is not None
        self._durability.note_written(header.seq, segment.fd)
        self._appended.fire()
        if self._blocked:
            self._blocked = False
            log.info("spool_appends_resumed", bytes=self._disk_bytes)

    async def _write(
        self, segment: Segment, buffers: list[bytes | bytearray | memoryview], size: int
    ) -> None:
        """Append one frame to ``segment``; on failure the file is cut back to whole frames."""
        fd = segment.fd
        assert fd is not None
        try:
            if size <= _INLINE_IO_MAX:
                self._disk.write_all(fd, buffers)
            else:
                # Shielded: the file must not be touched by the next append before this
                # write has finished, even if our caller is cancelled meanwhile.
                job = asyncio.ensure_future(asyncio.to_thread(self._disk.write_all, fd, buffers))
                try:
                    await asyncio.shield(job)
                except asyncio.CancelledError:
                    await asyncio.wait([job])
                    os.ftruncate(fd, segment.size)
                    raise
        except OSError:
            os.ftruncate(fd, segment.size)
            raise

    def _room_problem(self, frame_size: int) -> str | None:
        """Why a frame of ``frame_size`` bytes cannot be added now, or None if it can."""
        if self._disk_bytes + frame_size > self._max_size:
            return "max_size"
        if self._min_free_space:
            try:
                free = self._disk.free_bytes(self.directory)
            except OSError:
                return None  # cannot tell; the write itself will report ENOSPC if it is real
            if free - frame_size < self._min_free_space:
                return "min_free_space"
        return None

    async def _segment_for(self, frame_size: int) -> Segment:
        """The active segment, rolled over to a new file if this frame would overfill it."""
        active = self._active
        if active is not None and active.size and active.size + frame_size > self._segment_size:
            # Sync before moving on, so after a power cut only the newest segment can be torn.
            await self._durability.flush()
            assert active.fd is not None
            self._durability.retire(active.fd)
            active.fd = None
            self._active = active = None
        if active is None:
            path = os.path.join(self.directory, segment_name(self._next_seq))
            # O_EXCL: a name is a seq never used before, so an existing file would be a bug.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            active = Segment(path, fd=fd)
            self._segments.append(active)
            self._active = active
            self._durability.note_dir_changed()
        return active

    async def _reclaim_active(self) -> None:
        """Delete the active segment if the writer has committed all of it."""
        active = self._active
        if active is None or not active.frames or active.last_seq > self._committed:
            return
        await self._release_active()
        await self._delete([active])

    async def _release_active(self) -> None:
        active = self._active
        assert active is not None
        assert active.fd is not None
        await self._durability.idle()
        self._durability.discard(active.fd)
        active.fd = None
        self._active = None

    async def _drop_oldest(self, reason: str) -> bool:
        """Delete the oldest segment to make room; False if there is nothing to delete."""
        if not self._segments or not self._segments[0].frames:
            return False
        victim = self._segments[0]
        if victim is self._active:
            await self._release_active()
        batches = victim.uncommitted(self._committed)
        records = victim.records - victim.committed_records
        by_source = {
            source: count - victim.committed_by_source.get(source, 0)
            for source, count in victim.by_source.items()
        }
        # Batches the reader already holds are still delivered from memory: they leave the
        # disk but are not lost, so they are not reported as dropped (unless the writer gives
        # them back uncommitted: see _report_lost_in_flight).
        for held in self._delivered:
            if held.segment is victim and held.seq > self._committed:
                held_records, held_sources = meta_counts(held.meta)
                batches -= 1
                records -= held_records
                for source, count in held_sources.items():
                    by_source[source] = by_source.get(source, 0) - count
        await self._delete([victim])
        self._report_drop(DropReport(batches, victim.size, records, by_source, reason))
        return True

    def _report_drop(self, report: DropReport) -> None:
        """Count, log and hand ``report`` to ``on_drop``."""
        by_source = {source: n for source, n in report.by_source.items() if n > 0}
        report = DropReport(report.batches, report.bytes, report.records, by_source, report.reason)
        for index, amount in enumerate((report.batches, report.bytes, report.records)):
            self._dropped[index] += amount
        log.warning(
            "spool_dropped_oldest",
            reason=report.reason,
            batches=report.batches,
            bytes=report.bytes,
            records=report.records,
            by_source=by_source,
        )
        if self._on_drop is not None:
            try:
                self._on_drop(report)
            except Exception:  # a reporting hook must not break the spool
                log.exception("spool_on_drop_failed")

    def _report_lost_in_flight(self) -> None:
        """Batches the writer held when their segment was dropped, and gave back uncommitted:
        they cannot be read again, so they are lost after all."""
        records = 0
        by_source: dict[str, int] = {}
        lost = [d for d in self._delivered if d.segment.deleted and d.seq > self._committed]
        for held in lost:
            held_records, held_sources = meta_counts(held.meta)
            records += held_records
            for source, count in held_sources.items():
                by_source[source] = by_source.get(source, 0) + count
        if lost:
            self._report_drop(DropReport(len(lost), 0, records, by_source, "in_flight"))

    async def _delete(self, segments: list[Segment]) -> None:
        """Forget ``segments`` and delete their files (after persisting the cursor)."""
        # A commit and a drop may both pick a segment while the other is suspended.
        segments = [s for s in segments if not s.deleted]
        for segment in segments:
            segment.deleted = True
            self._segments.remove(segment)
            self._disk_bytes -= segment.size
        paths = [s.path for s in segments]
        async with self._cursor_lock:
            cursor = Cursor(self._committed, self._next_seq)
            # The cursor goes first: it carries the seq counter, which must not fall back
            # to a seq already used if every segment is gone after a restart.
            if await asyncio.to_thread(self._write_cursor_and_unlink, cursor, paths):
                self._persisted_cursor = cursor
            else:
                self._cursor_dirty.set()  # try again later
        self._freed.fire()

    def _write_cursor_and_unlink(self, cursor: Cursor, paths: list[str]) -> bool:
        """Persist ``cursor`` then delete ``paths``; False if the cursor could not be written."""
        written = True
        try:
            write_cursor(self.directory, cursor, self._disk)
        except OSError as exc:
            # A full disk must not stop the deletion that frees it.  Cost: after a crash
            # before the next cursor write, committed batches may be delivered again.
            log.warning("spool_cursor_write_failed", error=str(exc))
            written = False
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._disk.fsync_dir(self.directory)
        return written

    # -- reading and committing -----------------------------------------------------------

    async def read(self, *, follow: bool = True) -> AsyncIterator[SpoolEntry]:
        """Yield every uncommitted batch in seq order, then wait for new ones, until close.

        With ``follow=False`` the iteration ends instead of waiting (inspection tools, tests).
        Each call starts again at the oldest uncommitted batch (so a writer that failed can
        re-read what it did not commit) and ends the iteration of any earlier call.
        Memory: one batch at a time is read from disk.
        """
        self._reader_generation += 1
        generation = self._reader_generation
        self._report_lost_in_flight()
        self._delivered.clear()
        self._skipped.clear()
        next_seq = self._committed + 1
        segment: Segment | None = None
        fd: int | None = None
        offset = 0
        try:
            while not self._closed and generation == self._reader_generation:
                target = self._segment_holding(max(next_seq, self._committed + 1))
                if target is None or (target is segment and offset >= target.size):
                    if not follow:
                        return
                    await self._appended.wait()
                    continue
                if target is not segment:
                    if fd is not None:
                        os.close(fd)
                    segment, offset = target, 0
                    fd = os.open(target.path, os.O_RDONLY)
                assert fd is not None
                entry, frame_size, next_seq = await self._read_frame(segment, fd, offset, next_seq)
                offset += frame_size
                if entry is None or generation != self._reader_generation:
                    continue
                self._delivered.append(
                    _Delivered(entry.seq, segment, entry.meta, int(entry.appended_at * 1e9))
                )
                yield entry
        finally:
            if fd is not None:
                os.close(fd)

    def _segment_holding(self, seq: int) -> Segment | None:
        """The first live segment that holds ``seq`` or a later one."""
        for segment in self._segments:
            if segment.frames and segment.last_seq >= seq:
                return segment
        return None

    async def _read_frame(
        self, segment: Segment, fd: int, offset: int, next_seq: int
    ) -> tuple[SpoolEntry | None, int, int]:
        """The frame at ``offset`` (None if it is skipped: old or damaged), its size, and the
        seq the reader wants next."""
        try:
            header = decode_header(os.pread(fd, HEADER_SIZE, offset))
        except FrameError as exc:
            # Recovery checked every header, so this is damage that happened since (bit rot):
            # skip to the next intact frame, as recovery would.
            found = await asyncio.to_thread(
                resync_in_file, segment.path, offset, segment.size, next_seq - 1
            )
            end = found.offset if found else segment.size
            await self._quarantine_live(segment, f"bytes {offset}..{end}: {exc}; skipped")
            last_lost = found.header.seq - 1 if found else segment.last_seq
            await self._skip(next_seq, last_lost)
            return None, end - offset, max(next_seq, last_lost + 1)
        if header.seq < next_seq or header.seq <= self._committed:
            return None, header.size, next_seq
        body_at = offset + HEADER_SIZE
        if header.size > _INLINE_IO_MAX:
            meta, payload = await asyncio.to_thread(read_body, fd, body_at, header)
        else:
            meta, payload = read_body(fd, body_at, header)
            await asyncio.sleep(0)  # a backlog of small frames must not monopolise the loop
        if meta is None or payload is None:
            await self._quarantine_live(
                segment, f"frame seq {header.seq} at byte {offset}: corrupt"
            )
            await self._skip(header.seq, header.seq)
            return None, header.size, header.seq + 1
        entry = SpoolEntry(header.seq, payload, meta, header.appended_ns / 1e9)
        return entry, header.size, header.seq + 1

    async def _quarantine_live(self, segment: Segment, reason: str) -> None:
        """Keep a copy of a segment found damaged while reading; its intact frames still flow."""
        if await asyncio.to_thread(self._quarantine.find, segment.path) is not None:
            return  # found and reported by an earlier run; the damaged frame is skipped again
        entry = await asyncio.to_thread(self._quarantine.add, segment.path, reason, move=False)
        self._note_quarantined(entry)
        log.error("spool_segment_quarantined", segment=segment.path, reason=reason)

    def _note_quarantined(self, entry: QuarantinedSegment) -> None:
        self.quarantine_events += 1
        self._quarantined = (*self._quarantined, entry)

    async def _skip(self, first: int, last: int) -> None:
        """Seqs ``first..last`` are lost to damage; count them as done once all before are."""
        if first > last:
            return
        self._skipped.append((first, last))
        if not self._delivered:
            await self.commit(self._committed)  # nothing in flight: absorb right away

    async def commit(self, seq: int) -> None:
        """Record that every batch up to ``seq`` has been delivered; free their space.

        Commits are cumulative and come from the single writer, in order.  The commit point
        is persisted within ``fsync_interval`` (and whenever a segment is deleted), so a crash
        re-delivers at most the batches committed during that last interval.
        """
        if seq >= self._next_seq:
            raise ValueError(
                f"cannot commit seq {seq}: the last appended seq is {self._next_seq - 1}"
            )
        seq = max(seq, self._committed)
        while self._skipped and self._skipped[0][0] <= seq + 1:
            seq = max(seq, self._skipped.popleft()[1])
        if seq <= self._committed:
            return
        self._committed = seq
        while self._delivered and self._delivered[0].seq <= seq:
            done = self._delivered.popleft()
            done.segment.add_committed(done.meta)
            self._last_committed_ns = done.appended_ns
        finished = [s for s in self._segments if s is not self._active and s.last_seq <= seq]
        if finished:
            await self._delete(finished)
        active = self._active
        if active is not None and active.frames and active.last_seq <= seq:
            if not self._append_lock.locked():
                async with self._append_lock:
                    await self._reclaim_active()
            else:
                self._freed.fire()  # the waiting append reclaims it itself
        self._cursor_dirty.set()

    # -- visibility and lifecycle ---------------------------------------------------------

    def stats(self) -> SpoolStats:
        """A snapshot of size, backlog, age, drops and quarantine (cheap; no disk I/O)."""
        batches = sum(s.uncommitted(self._committed) for s in self._segments)
        oldest_age = None
        if batches:
            oldest_age = max(0.0, time.time() - self._oldest_uncommitted_ns() / 1e9)
        return SpoolStats(
            bytes=self._disk_bytes,
            batches=batches,
            oldest_age_s=oldest_age,
            segments=len(self._segments),
            committed_seq=self._committed,
            next_seq=self._next_seq,
            durable_seq=self._durability.synced_seq,
            blocked=self._blocked,
            dropped_batches=self._dropped[0],
            dropped_bytes=self._dropped[1],
            dropped_records=self._dropped[2],
            torn_tails_cut=self.torn_tails_cut,
            quarantine_events=self.quarantine_events,
            quarantined=self._quarantined,
        )

    def _oldest_uncommitted_ns(self) -> int:
        """Append time of the oldest uncommitted batch (an upper bound on its age when the
        writer has not read it yet and its segment is partly committed)."""
        head = next(s for s in self._segments if s.uncommitted(self._committed))
        if head.first_seq > self._committed:
            return head.first_ns
        if self._delivered:
            return self._delivered[0].appended_ns
        return self._last_committed_ns or head.first_ns

    async def close(self) -> None:
        """Flush, persist the commit point, release files.  Waiting appends get SpoolClosed."""
        if self._closed:
            return
        self._closed = True
        self._appended.fire()
        self._freed.fire()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._append_lock:
            with contextlib.suppress(SpoolError):
                await self._durability.flush()
            if self._active is not None:
                await self._release_active()
            self._durability.close_retired()
            try:
                await self._persist_cursor()
            except OSError as exc:
                log.warning("spool_cursor_write_failed", error=str(exc))
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        log.info("spool_closed", bytes=self._disk_bytes, committed_seq=self._committed)

    def _check_usable(self) -> None:
        if self._closed:
            raise SpoolClosed("spool is closed")
        if self._durability.error is not None:
            raise SpoolError(f"spool disk failed: {self._durability.error}")

    async def _persist_cursor(self) -> None:
        async with self._cursor_lock:
            cursor = Cursor(self._committed, self._next_seq)
            if cursor != self._persisted_cursor:
                await asyncio.to_thread(write_cursor, self.directory, cursor, self._disk)
                self._persisted_cursor = cursor

    async def _cursor_loop(self) -> None:
        while True:
            await self._cursor_dirty.wait()
            self._cursor_dirty.clear()
            try:
                await self._persist_cursor()
            except OSError as exc:
                # Only costs re-delivery after a crash; keep going, try again next time.
                log.warning("spool_cursor_write_failed", error=str(exc))
            # Rate limit: a lagging cursor costs duplicates, a cursor fsync per batch costs flash.
            await asyncio.sleep(self._fsync_interval)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._fsync_interval)
            if self._durability.written_seq > self._durability.synced_seq:
                try:
                    await self._durability.flush()
                except SpoolError:
                    log.exception("spool_fsync_failed")
                    return
