"""Spool bounds (max_size, free-space watermark, ENOSPC) under the block / drop_oldest policies."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Sequence
from types import SimpleNamespace

from structlog.testing import capture_logs

from tstoraged.spool import DropReport, Spool, SpoolClosed
from tstoraged.spool.diskio import Buffer, DiskIO

PAYLOAD = b"p" * 100
META = {"records": 5, "sources": {"a": 3, "b": 2}}
# Each frame: 48-byte header + metadata + 100-byte payload.
FRAME = 48 + len(b'{"records":5,"sources":{"a":3,"b":2}}') + len(PAYLOAD)


async def small_spool(directory, **settings) -> Spool:
    """A spool whose segments hold two test frames, fsync per batch, plus ``settings``."""
    return await Spool.open(directory, **{"fsync": "batch", "segment_size": 2 * FRAME, **settings})


async def until_blocked(spool: Spool) -> None:
    """Let other tasks run until an append is waiting for room (bounded; no timing)."""
    for _ in range(1000):
        if spool.stats().blocked:
            return
        await asyncio.sleep(0)
    raise AssertionError("no append is waiting for room")


async def read_and_commit(spool: Spool, count: int) -> list[int]:
    """Deliver and commit the ``count`` oldest batches; their seqs."""
    seqs = []
    async for entry in spool.read():
        seqs.append(entry.seq)
        await spool.commit(entry.seq)
        if len(seqs) == count:
            break
    return seqs


async def remaining(spool: Spool) -> list[int]:
    return [entry.seq async for entry in spool.read(follow=False)]


class TinyDisk:
    """A file system of ``capacity`` bytes holding only the spool directory.

    ``statvfs`` reports what is left; a write that does not fit writes what fits and then
    fails with ENOSPC, as a real full disk does.
    """

    def __init__(self, directory: str, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        self.enospc_raised = 0

    def used(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.directory):
            for name in files:
                total += os.stat(os.path.join(root, name)).st_size
        return total

    def statvfs(self, _path: str) -> SimpleNamespace:
        return SimpleNamespace(f_bavail=max(0, self.capacity - self.used()), f_frsize=1)

    def writev(self, fd: int, buffers: Sequence[Buffer]) -> int:
        data = b"".join(bytes(b) for b in buffers)
        room = self.capacity - self.used()
        if len(data) > room:
            if room > 0:
                os.write(fd, data[:room])  # a partial frame reaches the file
            self.enospc_raised += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def io(self) -> DiskIO:
        return DiskIO(writev=self.writev, statvfs=self.statvfs)


async def test_block_policy_waits_for_commits_and_loses_nothing(tmp_path):
    spool = await small_spool(
        tmp_path,
        max_size=6 * FRAME,
        overflow="block",
        space_recheck_interval=3600,  # only a commit can wake the waiting append
    )
    appended = [await spool.append(PAYLOAD, META) for _ in range(6)]
    late = asyncio.create_task(spool.append(PAYLOAD, META))
    await until_blocked(spool)
    assert not late.done()
    assert spool.stats().bytes == 6 * FRAME

    delivered = await read_and_commit(spool, 2)  # the oldest segment is freed
    appended.append(await late)

    assert not spool.stats().blocked
    assert delivered + await remaining(spool) == appended
    await spool.close()


async def test_drop_oldest_drops_whole_oldest_segments_and_reports_counts(tmp_path):
    reports: list[DropReport] = []
    spool = await small_spool(
        tmp_path,
        max_size=6 * FRAME,
        overflow="drop_oldest",
        on_drop=reports.append,
    )
    with capture_logs() as logs:
        appended = [await spool.append(PAYLOAD, META) for _ in range(20)]

    kept = await remaining(spool)
    dropped = sum(r.batches for r in reports)
    assert kept == appended[dropped:]  # the newest survive, in order
    assert dropped == 14
    assert all(r.batches == 2 and r.bytes == 2 * FRAME and r.reason == "max_size" for r in reports)
    assert sum(r.records for r in reports) == 5 * dropped
    assert {k: sum(r.by_source[k] for r in reports) for k in "ab"} == {
        "a": 3 * dropped,
        "b": 2 * dropped,
    }
    stats = spool.stats()
    assert (stats.dropped_batches, stats.dropped_records) == (dropped, 5 * dropped)
    assert stats.dropped_bytes == dropped * FRAME
    assert stats.bytes <= 6 * FRAME
    assert next(e for e in logs if e["event"] == "spool_dropped_oldest")["records"] == 10
    await spool.close()


async def test_drop_oldest_counts_only_uncommitted_batches_of_the_dropped_segment(tmp_path):
    reports: list[DropReport] = []
    spool = await small_spool(
        tmp_path,
        max_size=4 * FRAME,
        overflow="drop_oldest",
        on_drop=reports.append,
    )
    for _ in range(4):
        await spool.append(PAYLOAD, META)
    await read_and_commit(spool, 1)  # first segment: one batch delivered, one not
    await spool.append(PAYLOAD, META)

    (report,) = reports
    assert (report.batches, report.records, dict(report.by_source)) == (1, 5, {"a": 3, "b": 2})
    assert await remaining(spool) == [3, 4, 5]
    await spool.close()


async def test_free_space_watermark_blocks_like_a_full_spool(tmp_path):
    disk = TinyDisk(str(tmp_path), capacity=10 * FRAME)
    spool = await small_spool(
        tmp_path,
        max_size=1 << 30,  # far away: only the watermark limits
        min_free_space=5 * FRAME + 1,  # room for four frames, not five
        disk=disk.io(),
        space_recheck_interval=3600,
    )
    with capture_logs() as logs:
        for _ in range(4):
            await spool.append(PAYLOAD, META)
        late = asyncio.create_task(spool.append(PAYLOAD, META))
        await until_blocked(spool)
    assert any(e.get("reason") == "min_free_space" for e in logs)

    await read_and_commit(spool, 2)
    await late
    assert await remaining(spool) == [3, 4, 5]
    assert disk.enospc_raised == 0  # the watermark kept the disk from filling up
    await spool.close()


async def test_free_space_watermark_drops_oldest_with_drop_policy(tmp_path):
    disk = TinyDisk(str(tmp_path), capacity=10 * FRAME)
    reports: list[DropReport] = []
    spool = await small_spool(
        tmp_path,
        min_free_space=5 * FRAME,
        overflow="drop_oldest",
        on_drop=reports.append,
        disk=disk.io(),
    )
    appended = [await spool.append(PAYLOAD, META) for _ in range(8)]

    assert reports
    assert {r.reason for r in reports} == {"min_free_space"}
    dropped = sum(r.batches for r in reports)
    assert await remaining(spool) == appended[dropped:]
    await spool.close()


async def test_enospc_cuts_the_partial_frame_and_drops_oldest(tmp_path):
    disk = TinyDisk(str(tmp_path), capacity=5 * FRAME + FRAME // 2)
    reports: list[DropReport] = []
    spool = await small_spool(
        tmp_path,
        overflow="drop_oldest",
        on_drop=reports.append,
        disk=disk.io(),
    )
    appended = [await spool.append(PAYLOAD, {"i": i}) for i in range(8)]
    await spool.close()

    assert disk.enospc_raised >= 1
    assert {r.reason for r in reports} == {"enospc"}
    dropped = sum(r.batches for r in reports)
    reopened = await Spool.open(tmp_path, fsync="batch")
    assert reopened.stats().torn_tails_cut == 0  # no partial frame was left behind
    entries = [e async for e in reopened.read(follow=False)]
    assert [e.seq for e in entries] == appended[dropped:]
    assert all(e.payload == PAYLOAD for e in entries)
    await reopened.close()


async def test_enospc_with_block_policy_waits_then_writes_after_commit(tmp_path):
    disk = TinyDisk(str(tmp_path), capacity=4 * FRAME + FRAME // 2)
    spool = await small_spool(
        tmp_path,
        overflow="block",
        disk=disk.io(),
        space_recheck_interval=3600,
    )
    appended = [await spool.append(PAYLOAD, META) for _ in range(4)]
    late = asyncio.create_task(spool.append(PAYLOAD, META))
    await until_blocked(spool)
    assert disk.enospc_raised == 1

    delivered = await read_and_commit(spool, 2)
    appended.append(await late)

    assert delivered + await remaining(spool) == appended
    await spool.close()


async def test_close_releases_a_blocked_append(tmp_path):
    spool = await Spool.open(
        tmp_path, max_size=2 * FRAME, segment_size=FRAME, space_recheck_interval=3600
    )
    await spool.append(PAYLOAD, META)
    await spool.append(PAYLOAD, META)
    late = asyncio.create_task(spool.append(PAYLOAD, META))
    await until_blocked(spool)
    await spool.close()
    assert isinstance(late.exception(), SpoolClosed)


async def test_reader_skips_batches_dropped_while_it_was_delivering_them(tmp_path):
    spool = await small_spool(tmp_path, max_size=4 * FRAME, overflow="drop_oldest")
    for _ in range(4):
        await spool.append(PAYLOAD, META)
    reader = spool.read()
    first = await anext(reader)  # the writer holds batch 1 of the oldest segment ...
    await spool.append(PAYLOAD, META)  # ... which is dropped to make room for batch 5

    following = [(await anext(reader)).seq for _ in range(3)]
    await spool.commit(first.seq)  # committing a dropped batch is harmless
    await reader.aclose()

    assert first.seq == 1
    assert following == [3, 4, 5]
    # Batch 1 left the disk but the writer holds it and delivers it: only batch 2 is lost.
    assert spool.stats().dropped_batches == 1
    await spool.close()


async def test_interval_durable_completes_for_a_batch_dropped_before_its_flush(tmp_path):
    spool = await small_spool(
        tmp_path, fsync="interval", fsync_interval=0.01, max_size=2 * FRAME, overflow="drop_oldest"
    )
    first = await spool.append(PAYLOAD, META)
    await spool.append(PAYLOAD, META)
    await spool.append(PAYLOAD, META)  # drops the segment holding ``first``
    await spool.durable(first)
    assert spool.stats().dropped_batches == 2
    await spool.close()


async def test_held_batch_of_a_dropped_segment_is_reported_if_the_writer_gives_it_back(tmp_path):
    reports: list[DropReport] = []
    spool = await small_spool(
        tmp_path, max_size=4 * FRAME, overflow="drop_oldest", on_drop=reports.append
    )
    for _ in range(4):
        await spool.append(PAYLOAD, META)
    reader = spool.read()
    held = await anext(reader)  # the writer holds batch 1 ...
    await spool.append(PAYLOAD, META)  # ... its segment is dropped (batch 2 is lost) ...
    await reader.aclose()  # ... and the writer fails without committing batch 1

    assert [e.seq async for e in spool.read(follow=False)] == [3, 4, 5]

    assert held.seq == 1
    assert [(r.batches, r.records, r.reason) for r in reports] == [
        (1, 5, "max_size"),
        (1, 5, "in_flight"),
    ]
    assert spool.stats().dropped_batches == 2
    await spool.close()
