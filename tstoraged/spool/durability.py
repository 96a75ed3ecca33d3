"""Which appended seqs are on disk, and the fsyncs that put them there.

Appends only ``write()``; this class turns "written" into "durable".  fsync runs in a worker
thread (it can take tens of milliseconds on an SD card, too long to stall the event loop) and
concurrent requests are coalesced: while one fsync runs, every later request waits for the
next one, which then covers all of them (group commit).
"""

from __future__ import annotations

import asyncio
import os

from tstoraged.spool.diskio import DiskIO
from tstoraged.spool.reports import SpoolError
from tstoraged.spool.wakeup import Wakeup


class Durability:
    """Tracks written vs. fsynced seqs and the descriptors that still need an fsync."""

    def __init__(self, directory: str, disk: DiskIO, synced_seq: int) -> None:
        self._directory = directory
        self._disk = disk
        self.written_seq = synced_seq
        self.synced_seq = synced_seq
        self._dirty_fds: set[int] = set()
        self._inflight_fds: set[int] = set()  # being fsynced by the worker thread right now
        self._retired_fds: set[int] = set()  # closed once their data is synced
        self._dir_dirty = False
        self._running: asyncio.Future[None] | None = None
        self._synced = Wakeup()
        self.error: BaseException | None = None

    def note_written(self, seq: int, fd: int) -> None:
        """``seq`` was written through ``fd`` and is not yet durable."""
        self.written_seq = seq
        self._dirty_fds.add(fd)

    def note_dir_changed(self) -> None:
        """A file was created in the spool directory; its entry needs a directory fsync."""
        self._dir_dirty = True

    def note_skipped(self, seq: int) -> None:
        """``seq`` will never be written (dropped); waiters for it need not wait for disk."""
        self.written_seq = max(self.written_seq, seq)

    def retire(self, fd: int) -> None:
        """``fd`` receives no more writes; close it as soon as its data is durable."""
        if fd in self._dirty_fds or fd in self._inflight_fds:
            self._retired_fds.add(fd)
        else:
            os.close(fd)

    def discard(self, fd: int) -> None:
        """Close ``fd`` without syncing it (its file is being deleted). Call only when idle."""
        self._dirty_fds.discard(fd)
        self._retired_fds.discard(fd)
        os.close(fd)

    async def idle(self) -> None:
        """Wait until no fsync is in flight (so descriptors may be closed safely)."""
        while self._running is not None:
            await asyncio.shield(self._running)

    async def sync_through(self, seq: int) -> None:
        """Return once every seq up to ``seq`` is durable, starting fsyncs as needed."""
        while self.synced_seq < seq:
            self._raise_if_failed()
            if self._running is None:
                self._running = asyncio.ensure_future(self._sync_once())
            await asyncio.shield(self._running)
        self._raise_if_failed()

    async def wait_durable(self, seq: int) -> None:
        """Return once ``seq`` is durable, without starting an fsync (interval policy)."""
        while self.synced_seq < seq:
            self._raise_if_failed()
            await self._synced.wait()

    async def flush(self) -> None:
        """Make everything written so far durable."""
        await self.sync_through(self.written_seq)

    def fail(self, exc: BaseException) -> None:
        """Wake every waiter with ``exc`` (the spool is closing or broken)."""
        self.error = exc
        self._synced.fire()

    def close_retired(self) -> None:
        """Close every retired descriptor (at spool close, after the final flush)."""
        for fd in self._retired_fds:
            os.close(fd)
        self._retired_fds.clear()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise SpoolError(f"spool cannot make data durable: {self.error}") from self.error

    async def _sync_once(self) -> None:
        target = self.written_seq
        fds = list(self._dirty_fds)
        sync_dir = self._dir_dirty
        self._dirty_fds.clear()
        self._inflight_fds = set(fds)
        self._dir_dirty = False
        try:
            await asyncio.to_thread(self._fsync_all, fds, sync_dir)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages: nothing
            # written since the last good fsync can be promised any more.
            self.error = exc
        else:
            self.synced_seq = max(self.synced_seq, target)
            for fd in self._retired_fds - self._dirty_fds:
                os.close(fd)
            self._retired_fds &= self._dirty_fds
        finally:
            self._inflight_fds = set()
            self._running = None
            self._synced.fire()

    def _fsync_all(self, fds: list[int], sync_dir: bool) -> None:
        for fd in fds:
            self._disk.fsync(fd)
        if sync_dir:
            self._disk.fsync_dir(self._directory)
