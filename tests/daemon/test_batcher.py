"""Batching boundaries: bytes, record count, flush interval, oversized records, puta acq."""

from __future__ import annotations

import asyncio

from tstorage_client.record import Key, Record
from tstoraged.pipeline.batch import (
    CID_BATCH_OVERHEAD,
    REQUEST_OVERHEAD,
    AcqClock,
    Batch,
    record_overhead,
)
from tstoraged.pipeline.batcher import Batcher
from tstoraged.pipeline.intake import Intake
from tstoraged.pipeline.settings import BatchSettings, QueueSettings, WriteMode
from tstoraged.pipeline.stage import MemoryHandoff
from tstoraged.pipeline.testing import RecordingObserver

BIG_QUEUE = QueueSettings(max_records=1_000_000, max_bytes=1 << 30)


def records(count: int, *, cid: int = 1, payload: bytes = b"\x00" * 4, start: int = 0):
    return [Record(Key(cid, start + i, 0, start + i), payload) for i in range(count)]


def wire_size(batch: Batch) -> int:
    """The exact size of the PUT/PUTA request the batch becomes."""
    cids = {record.key.cid for record in batch.records}
    overhead = record_overhead(batch.write_mode)
    return (
        REQUEST_OVERHEAD
        + CID_BATCH_OVERHEAD * len(cids)
        + sum(overhead + len(record.value) for record in batch.records)
    )


async def batch_all(
    emits, settings: BatchSettings, *, write_mode: WriteMode = "put", acq_clock=None
) -> list[Batch]:
    """Emit everything, close the intake, run the batcher to the end, return its batches."""
    intake = Intake(BIG_QUEUE, write_mode)
    handoff = MemoryHandoff(max_batches=10_000)
    batcher = Batcher(intake, handoff, settings, write_mode=write_mode, acq_clock=acq_clock)
    for source, recs, ack in emits:
        await intake.emit(source, recs, ack)
    intake.close()
    await batcher.run()
    batches = []
    while (batch := await handoff.next_batch()) is not None:
        batches.append(batch)
    return batches


async def test_batch_closes_at_max_records():
    settings = BatchSettings(max_records=10, flush_interval=3600)
    batches = await batch_all([("s", records(25), None)], settings)
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [r for b in batches for r in b.records] == records(25)


async def test_batch_closes_at_max_bytes_and_never_exceeds_it():
    payload = b"x" * 100
    per_record = record_overhead("put") + len(payload)
    limit = REQUEST_OVERHEAD + CID_BATCH_OVERHEAD + 3 * per_record + per_record // 2
    settings = BatchSettings(max_batch_size=limit, flush_interval=3600)
    batches = await batch_all([("s", records(10, payload=payload), None)], settings)
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    for batch in batches:
        assert batch.nbytes == wire_size(batch) <= limit


async def test_byte_limit_counts_a_header_per_cid():
    payload = b"y" * 20
    mixed = [Record(Key(i % 4, i, 0, i), payload) for i in range(40)]
    limit = 600
    settings = BatchSettings(max_batch_size=limit, flush_interval=3600)
    # One emit per record, so that the per-record path through the intake is used too.
    emits = [("s", [record], None) for record in mixed[:20]] + [("s", mixed[20:], None)]
    batches = await batch_all(emits, settings, write_mode="puta")
    assert [r.key.mid for b in batches for r in b.records] == list(range(40))
    for batch in batches:
        assert wire_size(batch) <= batch.nbytes <= limit


async def test_single_oversized_record_travels_alone():
    small = records(2, payload=b"a")
    huge = [Record(Key(1, 99, 0, 99), b"z" * 5000)]
    settings = BatchSettings(max_batch_size=1000, flush_interval=3600)
    batches = await batch_all([("s", small + huge + small, None)], settings)
    assert [len(b) for b in batches] == [2, 1, 2]
    assert batches[1].records == huge


async def test_batch_closes_after_flush_interval_without_reaching_limits():
    intake = Intake(BIG_QUEUE)
    handoff = MemoryHandoff()
    batcher = Batcher(intake, handoff, BatchSettings(flush_interval=0.05))
    async with asyncio.TaskGroup() as group:
        task = group.create_task(batcher.run())
        await intake.emit("s", records(3))
        async with asyncio.timeout(10):
            batch = await handoff.next_batch()
        assert batch is not None
        assert len(batch) == 3
        assert not intake.closed  # sealed by time, not by the end of input
        intake.close()
    assert task.done()


async def test_ack_of_an_emit_split_across_batches_travels_with_its_last_part():
    settings = BatchSettings(max_records=10, flush_interval=3600)

    def ack() -> None:
        pass

    batches = await batch_all([("s", records(25), ack)], settings)
    assert [b.acks for b in batches] == [[], [], [ack]]


async def test_acks_keep_emit_order_including_empty_emits():
    fired: list[str] = []
    settings = BatchSettings(max_records=4, flush_interval=3600)
    emits = [
        ("a", records(3), lambda: fired.append("a1")),
        ("a", [], lambda: fired.append("a-empty")),
        ("b", records(3, cid=2), lambda: fired.append("b1")),
        ("a", records(3, start=10), lambda: fired.append("a2")),
    ]
    batches = await batch_all(emits, settings)
    for batch in batches:
        batch.fire_acks()
    assert fired == ["a1", "a-empty", "b1", "a2"]
    # The source runs are attributed record by record.
    sources = [b.source_of(i) for b in batches for i in range(len(b))]
    assert sources == ["a"] * 3 + ["b"] * 3 + ["a"] * 3


async def test_puta_acq_is_assigned_at_seal_unique_and_above_the_floor():
    floor = 10**18  # a persisted floor far ahead of the wall clock
    settings = BatchSettings(max_records=7, flush_interval=3600)
    batches = await batch_all(
        [("s", records(20), None)], settings, write_mode="puta", acq_clock=AcqClock(floor)
    )
    acqs = [r.key.acq for b in batches for r in b.records]
    assert acqs == sorted(acqs)
    assert len(set(acqs)) == 20
    assert acqs[0] > floor
    # Everything but acq is kept.
    original = records(20)
    assert [r.key[:4] for b in batches for r in b.records] == [r.key[:4] for r in original]


async def test_put_batches_keep_the_records_acq():
    batches = await batch_all([("s", records(3), None)], BatchSettings(flush_interval=3600))
    assert [r.key.acq for r in batches[0].records] == [-1, -1, -1]


class EmptiedObserver(RecordingObserver):
    """Sets ``emptied`` when the intake's depth drops back to zero."""

    def __init__(self) -> None:
        super().__init__()
        self.emptied = asyncio.Event()

    def queue_depth(self, records: int, nbytes: int) -> None:
        super().queue_depth(records, nbytes)
        if records == 0:
            self.emptied.set()


async def test_reconfigure_applies_new_limits_to_the_open_batch():
    observer = EmptiedObserver()
    intake = Intake(BIG_QUEUE, observer=observer)
    handoff = MemoryHandoff()
    batcher = Batcher(intake, handoff, BatchSettings(max_records=100, flush_interval=3600))
    async with asyncio.TaskGroup() as group:
        group.create_task(batcher.run())
        await intake.emit("s", records(5))
        # Wait until the batcher has taken the records into its open batch.
        async with asyncio.timeout(10):
            await observer.emptied.wait()
        batcher.reconfigure(BatchSettings(max_records=5, flush_interval=3600))
        async with asyncio.timeout(10):
            batch = await handoff.next_batch()
        assert batch is not None
        assert len(batch) == 5
        intake.close()


def test_acq_clock_never_goes_backwards_when_the_wall_clock_does():
    now = [1_000]
    clock = AcqClock(now_ns=lambda: now[0])
    assert clock.reserve(10) == 1_000
    now[0] = 500  # the wall clock stepped back
    assert clock.reserve(1) == 1_010
    now[0] = 5_000
    assert clock.reserve(2) == 5_000
    assert clock.last == 5_001
