"""When a commit reaches the disk, and what the spool counts as its backlog after a restart.

With ``fsync = "batch"`` a commit is persisted before ``commit()`` returns, so the writer never
sends a batch while an earlier commit is only in memory: a crash repeats at most the batch in
flight (the put-mode bound of docs/delivery.md). With ``"interval"`` the cursor follows within
``fsync_interval``.
"""

from __future__ import annotations

from pathlib import Path

from tstoraged.spool import Spool
from tstoraged.spool.recovery import read_cursor

PAYLOAD = b"p" * 100
META = {"records": 5, "sources": {"a": 5}}


async def open_spool(directory: Path, fsync: str, interval: float = 60.0) -> Spool:
    return await Spool.open(
        directory,
        max_size=1 << 20,
        segment_size=64 << 10,
        fsync=fsync,  # type: ignore[arg-type]
        fsync_interval=interval,
        overflow="block",
        min_free_space=0,
    )


async def deliver(spool: Spool, count: int) -> list[int]:
    """Read and commit the ``count`` oldest batches, as the writer does; the cursor's
    committed seq on disk right after each commit returned."""
    on_disk = []
    async for entry in spool.read():
        await spool.commit(entry.seq)
        on_disk.append(read_cursor(str(spool.directory)).committed_seq)
        if len(on_disk) == count:
            break
    return on_disk


async def test_with_fsync_batch_every_commit_is_on_disk_when_commit_returns(tmp_path: Path):
    spool = await open_spool(tmp_path, "batch")
    seqs = [await spool.append(PAYLOAD, META) for _ in range(6)]
    assert await deliver(spool, 4) == seqs[:4]
    await spool.close()


async def test_with_fsync_interval_the_cursor_may_lag_behind_commits(tmp_path: Path):
    spool = await open_spool(tmp_path, "interval")
    seqs = [await spool.append(PAYLOAD, META) for _ in range(6)]
    on_disk = await deliver(spool, 4)
    # The first commit is written at once, the next ones wait for the interval (60 s here).
    assert on_disk[-1] < seqs[3]
    await spool.close()
    assert read_cursor(str(tmp_path)).committed_seq == seqs[3]  # close persists it


async def test_backlog_records_count_only_uncommitted_batches_after_a_restart(tmp_path: Path):
    spool = await open_spool(tmp_path, "batch")
    for _ in range(10):
        await spool.append(PAYLOAD, META)
    await deliver(spool, 4)
    assert (spool.stats().batches, spool.stats().records) == (6, 30)
    await spool.close()
    # Reopened: the committed frames still in the (shared) segment are not backlog.
    spool = await open_spool(tmp_path, "batch")
    assert (spool.stats().batches, spool.stats().records) == (6, 30)
    await spool.close()
