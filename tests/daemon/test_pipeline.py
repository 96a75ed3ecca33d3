"""The assembled pipeline: acks, backpressure, bounded memory, drain, reconfigure, puta."""

from __future__ import annotations

import asyncio

import pytest

from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseStatus
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.intake import Intake, IntakeClosed
from tstoraged.pipeline.pipeline import Pipeline
from tstoraged.pipeline.settings import (
    BatchSettings,
    QueueSettings,
    RetrySettings,
    TargetSettings,
    WriteMode,
)
from tstoraged.pipeline.testing import RecordingObserver, ScriptedSink

FAST_RETRY = RetrySettings(initial_backoff=0.001, max_backoff=0.01)


def records(count: int, *, start: int = 0, cid: int = 1):
    return [Record(Key(cid, i, 0, i), b"p%d" % i) for i in range(start, start + count)]


def make_pipeline(
    tmp_path,
    sink: ScriptedSink,
    *,
    batch: BatchSettings | None = None,
    queue: QueueSettings | None = None,
    write_mode: WriteMode = "put",
    observer: RecordingObserver | None = None,
) -> Pipeline:
    return Pipeline(
        target=TargetSettings(port=1, write_mode=write_mode),
        batch=batch or BatchSettings(max_records=10, flush_interval=3600),
        queue=queue or QueueSettings(),
        retry=FAST_RETRY,
        dead_letters=DeadLetterFile(tmp_path / "dead-letter.jsonl"),
        observer=observer,
        sink_factory=sink.factory,
    )


async def wait_for(event: asyncio.Event) -> None:
    async with asyncio.timeout(10):
        await event.wait()


async def release_and_drain(pipeline: Pipeline, gate: asyncio.Event, emitting: asyncio.Task):
    """Let held writes through, wait for a blocked emit to finish, then drain."""
    gate.set()
    async with asyncio.timeout(10):
        await emitting
    return await pipeline.drain(10)


async def test_acks_fire_in_emit_order_only_after_the_write(tmp_path):
    gate = asyncio.Event()
    sink = ScriptedSink(gate=gate)
    fired: list[str] = []
    all_acked = asyncio.Event()

    def ack(name: str):
        def fire() -> None:
            fired.append(name)
            if len(fired) == 4:
                all_acked.set()

        return fire

    async with make_pipeline(tmp_path, sink) as pipeline:
        await pipeline.emit("a", records(7), ack("a1"))
        await pipeline.emit("b", records(5, cid=2), ack("b1"))
        await pipeline.emit("a", [], ack("a-empty"))
        await pipeline.emit("a", records(3, start=100), ack("a2"))
        await wait_for(sink.write_started)
        assert fired == []  # the first write is still held
        assert sink.written == []
        gate.set()
        # Ending the flush of the last (partial) batch without waiting for its interval:
        report = await pipeline.drain(10)
    assert report.complete
    assert fired == ["a1", "b1", "a-empty", "a2"]
    assert all_acked.is_set()
    assert len(sink.written) == 15


async def test_emit_waits_while_the_intake_is_full_and_resumes_when_room_frees():
    intake = Intake(QueueSettings(max_records=10, max_bytes=1 << 20))
    await intake.emit("s", records(10))  # fills it exactly
    blocked = asyncio.create_task(intake.emit("s", records(3, start=10)))
    for _ in range(20):  # let the loop run; the emit cannot complete
        await asyncio.sleep(0)
    assert not blocked.done()
    assert intake.buffered_records == 10
    chunk = intake.take(4, 1 << 20, set(), at_least_one=True)
    assert chunk is not None
    assert len(chunk.records) == 4
    async with asyncio.timeout(10):
        await blocked
    assert intake.buffered_records == 9


async def test_memory_stays_bounded_by_the_queue_while_the_writer_is_stuck(tmp_path):
    gate = asyncio.Event()
    sink = ScriptedSink(gate=gate)
    observer = RecordingObserver()
    queue = QueueSettings(max_records=50, max_bytes=1 << 20)
    async with make_pipeline(tmp_path, sink, queue=queue, observer=observer) as pipeline:
        producer = asyncio.create_task(pipeline.emit("s", records(1000)))
        await wait_for(sink.write_started)
        for _ in range(50):
            await asyncio.sleep(0)
        assert not producer.done()  # backpressure reached the source
        # Queue + open batch + handoff (2 batches) + the batch being written.
        assert pipeline.buffered_records <= 50 + 4 * 10
        assert observer.max_queue_records <= 50
        report = await release_and_drain(pipeline, gate, producer)
    assert report.complete
    assert sink.written == records(1000)


async def test_intake_bytes_bound_admits_one_oversized_record_when_empty():
    intake = Intake(QueueSettings(max_records=100, max_bytes=100))
    huge = [Record(Key(1, 1, 0, 1), b"x" * 500)]
    await intake.emit("s", huge)  # admitted alone, or nothing could ever pass
    assert intake.buffered_records == 1
    blocked = asyncio.create_task(intake.emit("s", records(1)))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not blocked.done()
    assert intake.take(10, 10_000, set(), at_least_one=True) is not None
    async with asyncio.timeout(10):
        await blocked


async def test_drain_delivers_everything_buffered(tmp_path):
    sink = ScriptedSink()
    fired = []
    batch = BatchSettings(max_records=64, flush_interval=3600)
    pipeline = make_pipeline(tmp_path, sink, batch=batch)
    pipeline.start()
    for i in range(10):
        await pipeline.emit(f"s{i % 3}", records(33, start=i * 33), lambda i=i: fired.append(i))
    report = await pipeline.drain(10)
    assert report.complete
    assert report.undelivered_records == 0
    assert sink.written == records(330)
    assert fired == list(range(10))
    with pytest.raises(IntakeClosed):
        await pipeline.emit("s0", records(1))


async def test_drain_timeout_reports_what_was_not_delivered_and_fires_no_ack(tmp_path):
    sink = ScriptedSink([ResponseStatus.DISCONNECTED] * 10**6)
    fired = []
    pipeline = make_pipeline(tmp_path, sink)
    pipeline.start()
    await pipeline.emit("s", records(25), lambda: fired.append(1))
    await wait_for(sink.write_started)
    report = await pipeline.drain(0.2)
    assert not report.complete
    assert report.undelivered_records == 25
    assert fired == []
    assert sink.written == []


async def test_reconfigure_keeps_buffered_records(tmp_path):
    gate = asyncio.Event()
    sink = ScriptedSink(gate=gate)
    async with make_pipeline(tmp_path, sink) as pipeline:
        await pipeline.emit("s", records(35))
        await wait_for(sink.write_started)
        pipeline.reconfigure(
            batch=BatchSettings(max_records=3, flush_interval=3600),
            queue=QueueSettings(max_records=7, max_bytes=1 << 20),
            retry=RetrySettings(initial_backoff=0.002, max_backoff=0.004),
            target=TargetSettings(port=1),
        )
        # Blocks: the new queue bound (7) is below what is emitted while writes are held.
        later = asyncio.create_task(pipeline.emit("s", records(10, start=35)))
        report = await release_and_drain(pipeline, gate, later)
    assert report.complete
    assert sink.written == records(45)
    # Batches sealed after the reload respect the new limit.
    assert all(len(attempt) <= 3 for attempt in sink.attempts[-3:])


async def test_puta_keys_are_fixed_at_seal_and_identical_across_retries(tmp_path):
    sink = ScriptedSink([ResponseStatus.DISCONNECTED, ConnectionResetError(), ResponseStatus.OK])
    async with make_pipeline(tmp_path, sink, write_mode="puta") as pipeline:
        await pipeline.emit("s", records(10))
        report = await pipeline.drain(10)
    assert report.complete
    assert len(sink.attempts) == 3
    assert sink.attempts[0] == sink.attempts[1] == sink.attempts[2] == sink.written
    assert set(sink.modes) == {"puta"}
    acqs = [record.key.acq for record in sink.written]
    assert len(set(acqs)) == 10
    assert min(acqs) > 0


async def test_observer_sees_received_written_and_queue_depth(tmp_path):
    observer = RecordingObserver()
    sink = ScriptedSink()
    async with make_pipeline(tmp_path, sink, observer=observer) as pipeline:
        await pipeline.emit("a", records(12))
        await pipeline.emit("b", records(4, cid=3))
        report = await pipeline.drain(10)
    assert report.complete
    assert observer.received == {"a": 12, "b": 4}
    assert observer.written == {"a": 12, "b": 4}
    assert sum(count for count, _, _ in observer.batches) == 16
    assert observer.max_queue_records > 0


async def test_drain_reports_a_crashed_pipeline(tmp_path):
    sink = ScriptedSink(refuse=lambda record: True)
    pipeline = Pipeline(
        target=TargetSettings(port=1),
        batch=BatchSettings(max_records=10, flush_interval=3600),
        queue=QueueSettings(),
        retry=FAST_RETRY,
        # A dead-letter "file" that cannot be written: the writer fails instead of losing data.
        dead_letters=DeadLetterFile(tmp_path),
        sink_factory=sink.factory,
    )
    fired = []
    pipeline.start()
    await pipeline.emit("s", records(3), lambda: fired.append(1))
    report = await pipeline.drain(10)
    assert not report.complete
    assert report.error is not None
    assert "IsADirectoryError" in report.error
    assert fired == []


async def test_ack_only_emits_are_bounded_by_the_queue_too():
    intake = Intake(QueueSettings(max_records=3, max_bytes=1 << 20))
    for _ in range(3):
        await intake.emit("s", [], lambda: None)
    blocked = asyncio.create_task(intake.emit("s", [], lambda: None))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not blocked.done()
    chunk = intake.take(10, 1 << 20, set(), at_least_one=True)
    assert chunk is not None
    assert chunk.ack is not None
    assert not chunk.records
    async with asyncio.timeout(10):
        await blocked
