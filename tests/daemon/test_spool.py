"""Spool API: append / read / commit, restarts, durability policies (real files in tmp_path)."""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
import threading
from collections.abc import Awaitable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tstoraged.spool import BatchTooLarge, Spool, SpoolClosed, SpoolError
from tstoraged.spool.diskio import DiskIO


def payload_for(i: int, size: int = 100) -> bytes:
    """Distinct, checkable content for batch number ``i``."""
    return (f"batch-{i:06d}|".encode() * (size // 13 + 1))[:size]


async def read_all(spool: Spool, *, commit: bool = False) -> list[tuple[int, bytes, dict]]:
    """Every batch the spool holds now (without waiting for more)."""
    got = []
    async for entry in spool.read(follow=False):
        got.append((entry.seq, entry.payload, entry.meta))
        if commit:
            await spool.commit(entry.seq)
    return got


def segment_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".seg"))


async def test_round_trip_delivers_in_order_and_commit_deletes_segments(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch", segment_size=1024, max_size=1 << 20)
    seqs = [await spool.append(payload_for(i), {"i": i, "records": 3}) for i in range(30)]
    assert seqs == list(range(1, 31))
    assert spool.stats().batches == 30
    assert len(segment_files(tmp_path)) > 1

    got = await read_all(spool, commit=True)

    assert [seq for seq, _, _ in got] == seqs
    assert [p for _, p, _ in got] == [payload_for(i) for i in range(30)]
    assert [m for _, _, m in got] == [{"i": i, "records": 3} for i in range(30)]
    stats = spool.stats()
    assert (stats.batches, stats.bytes, stats.oldest_age_s) == (0, 0, None)
    assert segment_files(tmp_path) == []
    await spool.close()


async def test_restart_replays_uncommitted_batches_oldest_first(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch", segment_size=600)
    for i in range(20):
        await spool.append(payload_for(i), {"i": i})
    async for entry in spool.read(follow=False):
        await spool.commit(entry.seq)
        if entry.meta["i"] == 7:
            break
    await spool.close()

    reopened = await Spool.open(tmp_path, fsync="batch", segment_size=600)
    got = await read_all(reopened)

    assert [m["i"] for _, _, m in got] == list(range(8, 20))
    assert reopened.stats().batches == 12
    await reopened.close()


async def test_sequence_numbers_never_repeat_across_restarts(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch")
    for i in range(5):
        await spool.append(payload_for(i))
    await read_all(spool, commit=True)  # everything committed, every segment deleted
    await spool.close()

    reopened = await Spool.open(tmp_path, fsync="batch")
    assert await reopened.append(b"next") == 6
    await reopened.close()


async def test_reader_waits_for_new_batches_and_receives_them(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch")
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def writer() -> None:
        async for entry in spool.read():
            await received.put(entry.payload)
            await spool.commit(entry.seq)

    task = asyncio.create_task(writer())
    await spool.append(b"first")
    assert await received.get() == b"first"
    await spool.append(b"second")
    assert await received.get() == b"second"
    await spool.close()
    await task  # close ends a following reader


async def test_new_read_restarts_at_oldest_uncommitted(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch")
    for i in range(4):
        await spool.append(payload_for(i), {"i": i})
    async for entry in spool.read(follow=False):
        if entry.meta["i"] == 0:
            await spool.commit(entry.seq)
    # The writer failed after delivering 1..3 without committing: a new read starts again.
    got = await read_all(spool)
    assert [m["i"] for _, _, m in got] == [1, 2, 3]
    await spool.close()


async def test_commit_is_cumulative_and_rejects_unknown_seqs(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch")
    for i in range(5):
        await spool.append(payload_for(i))
    await spool.commit(3)
    assert spool.stats().batches == 2
    await spool.commit(2)  # older commits are no-ops
    assert spool.stats().committed_seq == 3
    with pytest.raises(ValueError, match="last appended seq is 5"):
        await spool.commit(6)
    await spool.close()


async def test_batch_larger_than_spool_is_refused(tmp_path):
    spool = await Spool.open(tmp_path, max_size=4096, segment_size=1024)
    with pytest.raises(BatchTooLarge):
        await spool.append(b"x" * 5000)
    await spool.close()


async def test_large_batches_round_trip_through_worker_threads(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch", segment_size=4 << 20, max_size=64 << 20)
    big = [os.urandom(1 << 20) for _ in range(3)]
    for data in big:
        await spool.append(data)
    assert [p for _, p, _ in await read_all(spool)] == big
    await spool.close()


async def test_stats_report_backlog_and_age_of_oldest_batch(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch")
    assert spool.stats().oldest_age_s is None
    await spool.append(b"a" * 100)
    await spool.append(b"b" * 100)
    stats = spool.stats()
    assert stats.batches == 2
    assert stats.bytes == sum(os.stat(tmp_path / name).st_size for name in segment_files(tmp_path))
    assert stats.oldest_age_s is not None
    assert stats.oldest_age_s >= 0
    await spool.close()


async def test_append_after_close_raises(tmp_path):
    spool = await Spool.open(tmp_path)
    await spool.close()
    with pytest.raises(SpoolClosed):
        await spool.append(b"late")


class RecordingFsync:
    """An fsync that records descriptors and can hold the flush until the test releases it."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def hold(self) -> None:
        """From now on, fsync waits for ``release``."""
        self.calls.clear()
        self.entered.clear()
        self.release.clear()

    def __call__(self, fd: int) -> None:
        self.entered.set()
        self.release.wait()
        self.calls.append(fd)
        os.fsync(fd)


async def test_batch_policy_append_returns_after_fsync(tmp_path):
    fsync = RecordingFsync()
    spool = await Spool.open(tmp_path, fsync="batch", disk=DiskIO(fsync=fsync))
    seq = await spool.append(b"payload")
    assert fsync.calls, "append returned before any fsync"
    assert spool.stats().durable_seq == seq
    await spool.close()


async def test_interval_policy_durable_completes_only_after_the_flush(tmp_path):
    fsync = RecordingFsync()
    spool = await Spool.open(
        tmp_path, fsync="interval", fsync_interval=0.01, disk=DiskIO(fsync=fsync)
    )
    fsync.hold()
    seq = await spool.append(b"payload")
    durable = asyncio.create_task(spool.durable(seq))
    try:
        # Wait until the background flush is inside fsync: the batch is not durable yet.
        assert await asyncio.to_thread(fsync.entered.wait, 30)
        await asyncio.sleep(0)
        assert not durable.done()
        assert spool.stats().durable_seq < seq
    finally:
        fsync.release.set()
    await durable
    assert fsync.calls
    assert spool.stats().durable_seq >= seq
    await spool.close()


async def test_failed_fsync_fails_durable_and_later_appends(tmp_path):
    broken = False

    def fsync(fd: int) -> None:
        if broken:
            raise OSError(errno.EIO, "I/O error")
        os.fsync(fd)

    spool = await Spool.open(tmp_path, fsync="batch", disk=DiskIO(fsync=fsync))
    broken = True
    with pytest.raises(SpoolError, match="durable"):
        await spool.append(b"payload")
    with pytest.raises(SpoolError):
        await spool.append(b"more")
    await spool.close()


async def test_cancelled_reader_does_not_block_a_new_one(tmp_path):
    spool = await Spool.open(tmp_path, fsync="batch")
    await spool.append(b"one")
    first = spool.read()
    assert (await anext(first)).payload == b"one"
    # A second read() supersedes the first one without waiting for it to be closed.
    assert [p for _, p, _ in await read_all(spool)] == [b"one"]
    await first.aclose()
    await spool.close()


async def test_a_second_spool_on_the_same_directory_is_refused(tmp_path):
    spool = await Spool.open(tmp_path)
    with pytest.raises(SpoolError, match="in use by another process"):
        await Spool.open(tmp_path)
    await spool.close()
    reopened = await Spool.open(tmp_path)  # released by close
    await reopened.close()


operation = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3000)),
    st.tuples(st.just("deliver"), st.integers(1, 5)),
    st.tuples(st.just("reopen"), st.just(0)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(operation, max_size=40))
def test_spool_behaves_like_a_persistent_fifo(ops):
    """Any mix of appends, deliveries with commit and restarts: order and content are kept."""

    async def run(directory: str) -> None:
        def open_spool() -> Awaitable[Spool]:
            return Spool.open(directory, fsync="batch", segment_size=4096, max_size=1 << 20)

        spool = await open_spool()
        model: list[tuple[int, bytes]] = []  # appended, not committed
        counter = 0
        for kind, arg in ops:
            if kind == "append":
                counter += 1
                payload = payload_for(counter, arg)
                model.append((await spool.append(payload, {"n": counter}), payload))
            elif kind == "deliver":
                wanted = model[:arg]
                got = []
                async for entry in spool.read(follow=False):
                    got.append((entry.seq, entry.payload))
                    await spool.commit(entry.seq)
                    if len(got) == len(wanted):
                        break
                assert got == wanted
                del model[: len(got)]
            else:
                await spool.close()
                spool = await open_spool()
            assert spool.stats().batches == len(model)
        assert [(s, p) for s, p, _ in await read_all(spool)] == model
        await spool.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(tmp))
