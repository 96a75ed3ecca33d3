"""The spool as the stage between batcher and writer: acks at durability, in-order replay,
source positions stored atomically with the records."""

from __future__ import annotations

from pathlib import Path

from tstorage_client.record import Key, Record
from tstoraged.pipeline.batch import Batch
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.observer import NullObserver
from tstoraged.pipeline.spooled import CheckpointedAck, SpoolStage, decode_batch, encode_batch


async def open_stage(tmp_path: Path, fsync: str = "batch") -> SpoolStage:
    return await SpoolStage.open(
        tmp_path / "spool",
        write_mode="puta",
        dead_letters=DeadLetterFile(tmp_path / "dead.jsonl"),
        observer=NullObserver(),
        max_size=64 << 20,
        fsync=fsync,  # type: ignore[arg-type]
        fsync_interval=0.05,
        overflow="block",
        min_free_space=0,
    )


def make_batch(seq: int, first: int, count: int, acks: list) -> Batch:
    records = [
        Record(Key(1, i, 2, 1000 + i, 5000 + i), i.to_bytes(4, "little"))
        for i in range(first, first + count)
    ]
    return Batch(
        seq=seq,
        write_mode="puta",
        records=records,
        segments=[("src", count)],
        acks=acks,
        nbytes=count * 40,
        created=0.0,
        sealed=0.0,
    )


def test_batch_encoding_round_trips_full_keys() -> None:
    records = [Record(Key(3, -5, 7, -(2**63), 2**62), b""), Record(Key(0, 1, 1, 1, 1), b"x" * 300)]
    assert decode_batch(encode_batch(records)) == records


async def test_acks_fire_once_durable_and_batches_come_back_in_order(tmp_path: Path) -> None:
    for fsync in ("batch", "interval"):
        stage = await open_stage(tmp_path / fsync, fsync)
        fired: list[int] = []
        first = make_batch(0, 0, 10, [lambda fired=fired: fired.append(1)])
        second = make_batch(1, 10, 5, [lambda fired=fired: fired.append(2)])
        expected_first, expected_second = list(first.records), list(second.records)
        await stage.submit(first)
        await stage.submit(second)
        assert first.records == []  # released once on disk: only the acks wait for fsync
        got_first = await stage.next_batch()
        got_second = await stage.next_batch()
        assert got_first is not None
        assert got_second is not None
        # Valid keys in cid order: kept as the ready request, decoded only when needed.
        assert got_first.encoded is not None
        assert len(got_first) == 10
        got_first.materialize()
        got_second.materialize()
        assert got_first.records == expected_first  # acq (puta) preserved
        assert got_second.records == expected_second
        assert got_first.segments == [("src", 10)]
        await stage.done(got_first)
        await stage.done(got_second)
        stage.close()
        assert await stage.next_batch() is None
        await stage.aclose()
        assert fired == [1, 2]


async def test_a_reopened_spool_replays_what_was_not_committed(tmp_path: Path) -> None:
    stage = await open_stage(tmp_path)
    await stage.submit(make_batch(0, 0, 3, []))
    await stage.submit(make_batch(1, 3, 3, []))
    delivered = await stage.next_batch()
    assert delivered is not None
    await stage.done(delivered)
    await stage.aclose()  # like a stop: the second batch is still in the spool

    again = await open_stage(tmp_path)
    replayed = await again.next_batch()
    assert replayed is not None
    replayed.materialize()
    assert [r.key.mid for r in replayed.records] == [3, 4, 5]
    assert [r.key.acq for r in replayed.records] == [5003, 5004, 5005]
    await again.aclose()


async def test_source_positions_survive_with_the_records(tmp_path: Path) -> None:
    stage = await open_stage(tmp_path)
    ack1 = CheckpointedAck("files", {"inode-7": 100})
    ack2 = CheckpointedAck("files", {"inode-7": 250, "inode-8": 40})
    await stage.submit(make_batch(0, 0, 2, [ack1]))
    await stage.submit(make_batch(1, 2, 2, [ack2]))
    await stage.aclose()

    # Nothing committed: the positions come from the spooled frames.
    reopened = await open_stage(tmp_path)
    assert reopened.recovered_checkpoints == {"files": {"inode-7": 250, "inode-8": 40}}
    for _ in range(2):
        batch = await reopened.next_batch()
        assert batch is not None
        await reopened.done(batch)
    await reopened.aclose()

    # Everything committed (frames may be gone): the positions were persisted first.
    last = await open_stage(tmp_path)
    assert last.recovered_checkpoints == {"files": {"inode-7": 250, "inode-8": 40}}
    await last.aclose()


async def test_batches_the_writer_must_check_or_reorder_keep_their_records(tmp_path: Path) -> None:
    stage = await open_stage(tmp_path)
    interleaved = make_batch(0, 0, 4, [])
    interleaved.records = [
        Record(Key(2 - i % 2, i, 1, i, 1), b"x") for i in range(4)
    ]  # cids 2, 1, 2, 1: a request would regroup them by cid
    invalid = make_batch(1, 0, 2, [])
    invalid.records = [Record(Key(1, 1, 1, 1, 1), b"a"), Record(Key(-1, 1, 1, 1, 1), b"b")]
    expected = [list(interleaved.records), list(invalid.records)]
    await stage.submit(interleaved)
    await stage.submit(invalid)
    for records in expected:
        batch = await stage.next_batch()
        assert batch is not None
        assert batch.encoded is None
        assert batch.records == records
        await stage.done(batch)
    await stage.aclose()
