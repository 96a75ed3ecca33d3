"""Spool recovery: torn tails, flipped bytes, garbage files -- never garbage out, never a crash."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tstoraged.spool import Spool
from tstoraged.spool.frame import HEADER_SIZE
from tstoraged.spool.scan import GoodFrame, walk

# Equal-sized frames (~104 bytes), so a 320-byte segment holds exactly three.
ORIGINALS = {seq: (f"payload-{seq:03d}|".encode() * 4, {"n": seq}) for seq in range(1, 13)}


async def write_spool(directory: Path, seqs: range, *, segment_size: int) -> None:
    spool = await Spool.open(directory, fsync="batch", segment_size=segment_size)
    for seq in seqs:
        payload, meta = ORIGINALS[seq]
        assert await spool.append(payload, meta) == seq
    await spool.close()


async def delivered(directory: Path, expected: dict | None = None) -> tuple[list[int], Spool]:
    """Open the spool, check every delivered batch against the original, return the seqs."""
    expected = expected or ORIGINALS
    spool = await Spool.open(directory, fsync="batch")
    seqs = []
    async for entry in spool.read(follow=False):
        assert (entry.payload, entry.meta) == expected[entry.seq], "garbage was delivered"
        seqs.append(entry.seq)
    assert seqs == sorted(set(seqs)), "not in order"
    return seqs, spool


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def frame_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, seq) of every frame in a segment file."""
    with open(path, "rb") as f:
        items = walk(f, os.fstat(f.fileno()).st_size, verify_payload=True)
        return [(i.offset, i.header.seq) for i in items if isinstance(i, GoodFrame)]


def contents(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


@pytest.fixture
async def one_segment(tmp_path) -> Path:
    """Three batches in one segment."""
    await write_spool(tmp_path / "pristine", range(1, 4), segment_size=1 << 20)
    return tmp_path / "pristine"


@pytest.fixture
async def four_segments(tmp_path) -> Path:
    """Twelve batches in four segments of three."""
    directory = tmp_path / "pristine"
    await write_spool(directory, range(1, 13), segment_size=320)
    assert [seq for _, seq in frame_offsets(segments(directory)[1])] == [4, 5, 6]
    return directory


async def test_torn_tail_is_cut_at_every_truncation_length(one_segment, tmp_path):
    segment = segments(one_segment)[0]
    size = segment.stat().st_size
    last_offset = frame_offsets(segment)[-1][0]
    for length in range(last_offset, size):
        case = tmp_path / f"cut{length}"
        shutil.copytree(one_segment, case)
        os.truncate(segments(case)[0], length)

        seqs, spool = await delivered(case)

        assert seqs == [1, 2], f"truncated to {length}"
        assert spool.stats().torn_tails_cut == (1 if length > last_offset else 0)
        assert segments(case)[0].stat().st_size == last_offset
        assert spool.stats().quarantined == ()
        new_seq = await spool.append(b"after the cut")  # the spool goes on from the cut
        assert new_seq > 3
        await spool.close()
        shutil.rmtree(case)


# Fixed junk (seeded), with readable ids: random parameters would differ between the
# collections of pytest-xdist workers.
_JUNK = random.Random(1234)


@pytest.mark.parametrize(
    "tail",
    [b"\0" * 4096, _JUNK.randbytes(777), b"TSPF" + _JUNK.randbytes(60)],
    ids=["zeros", "random", "magic-then-random"],
)
async def test_junk_after_the_last_frame_is_cut(one_segment, tail):
    append_bytes(segments(one_segment)[0], tail)
    seqs, spool = await delivered(one_segment)
    assert seqs == [1, 2, 3]
    assert spool.stats().torn_tails_cut == 1
    await spool.close()


async def test_flipped_payload_byte_in_an_old_segment_quarantines_and_delivers_the_rest(
    four_segments,
):
    segment = segments(four_segments)[1]
    offset, seq = frame_offsets(segment)[1]
    flip(segment, offset + HEADER_SIZE + 20)

    seqs, spool = await delivered(four_segments)

    assert seqs == [s for s in range(1, 13) if s != seq]
    stats = spool.stats()
    assert stats.quarantine_events == 1
    (entry,) = stats.quarantined
    assert f"seq {seq}" in entry.reason
    assert contents(entry.file) == contents(segment)
    await spool.close()


async def test_flipped_header_byte_in_the_middle_salvages_frames_before_and_after(four_segments):
    segment = segments(four_segments)[1]
    offset, seq = frame_offsets(segment)[1]
    flip(segment, offset + 9)  # inside the seq field: the header checksum fails
    damaged = contents(segment)

    seqs, spool = await delivered(four_segments)

    assert seqs == [s for s in range(1, 13) if s != seq]
    (entry,) = spool.stats().quarantined
    assert "header checksum mismatch" in entry.reason
    assert contents(entry.file) == damaged  # the evidence is kept as it was found
    reason = json.loads(contents(entry.file + ".reason.json"))
    assert reason["segment"] == segment.name
    await spool.close()

    # The live segment was rewritten clean: a second restart finds nothing new to report.
    seqs_again, reopened = await delivered(four_segments)
    assert seqs_again == seqs
    assert reopened.stats().quarantine_events == 0
    assert len(reopened.stats().quarantined) == 1
    await reopened.close()


async def test_corrupt_frame_inside_newest_segment_is_not_mistaken_for_a_torn_tail(four_segments):
    newest = segments(four_segments)[-1]
    offset, seq = frame_offsets(newest)[0]
    flip(newest, offset + HEADER_SIZE + 30)  # payload of the first frame; intact frames follow

    seqs, spool = await delivered(four_segments)

    assert seqs == [s for s in range(1, 13) if s != seq]
    assert spool.stats().torn_tails_cut == 0
    assert spool.stats().quarantine_events == 1
    await spool.close()


async def test_segment_that_is_entirely_garbage_is_moved_to_quarantine(four_segments):
    garbage = four_segments / "00000000000000000000.seg"
    junk = os.urandom(5000)
    append_bytes(garbage, junk)

    seqs, spool = await delivered(four_segments)

    assert seqs == list(range(1, 13))
    assert not garbage.exists()
    (entry,) = spool.stats().quarantined
    assert contents(entry.file) == junk
    await spool.close()


async def test_foreign_and_leftover_files_do_not_disturb_the_spool(four_segments):
    (four_segments / "notes.txt").write_text("operator notes")
    (four_segments / "cursor.tmp").write_bytes(b"half a cursor")
    (four_segments / "00000000000000000004.seg.salvage").write_bytes(b"interrupted salvage")
    (four_segments / "00000000000000000099.seg").mkdir()
    (four_segments / "00000000000000000098.seg").write_bytes(b"")

    seqs, spool = await delivered(four_segments)

    assert seqs == list(range(1, 13))
    assert (four_segments / "notes.txt").read_text() == "operator notes"
    assert not (four_segments / "cursor.tmp").exists()
    assert not (four_segments / "00000000000000000004.seg.salvage").exists()
    assert not (four_segments / "00000000000000000098.seg").exists()  # empty segment removed
    assert spool.stats().quarantined == ()
    await spool.append(b"still works")
    await spool.close()


async def test_misnamed_segment_is_renamed_after_its_first_seq(four_segments):
    os.rename(
        four_segments / "00000000000000000010.seg", four_segments / "00000000000000000050.seg"
    )
    seqs, spool = await delivered(four_segments)
    assert seqs == list(range(1, 13))
    assert (four_segments / "00000000000000000010.seg").exists()
    assert await spool.append(b"next") == 13
    await spool.close()


async def test_damaged_cursor_replays_everything_rather_than_losing_anything(four_segments):
    spool = await Spool.open(four_segments, fsync="batch", segment_size=320)
    async for entry in spool.read(follow=False):
        await spool.commit(entry.seq)
        if entry.seq == 5:
            break
    await spool.close()
    (four_segments / "cursor").write_bytes(b"\x00garbage")

    seqs, reopened = await delivered(four_segments)

    assert seqs[0] <= 6  # at-least-once: what was committed in a live segment comes again
    assert seqs[-(12 - 5) :] == list(range(6, 13))
    await reopened.close()


# -- property: any damage to any segment ----------------------------------------------------

_PRISTINE: dict[str, Path] = {}


def pristine_spool() -> Path:
    """Twelve batches in four segments, written once per test session."""
    if "dir" not in _PRISTINE:
        directory = Path(tempfile.mkdtemp(prefix="spool-pristine-"))
        asyncio.run(write_spool(directory, range(1, 13), segment_size=320))
        _PRISTINE["dir"] = directory
    return _PRISTINE["dir"]


damage_op = st.tuples(
    st.integers(0, 3),  # which segment
    st.sampled_from(["flip", "truncate", "zero", "append"]),
    st.floats(0, 1),  # where, as a fraction of the file
    st.integers(1, 300),  # how many bytes
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(damage_op, min_size=1, max_size=4))
def test_any_damage_never_crashes_and_never_delivers_garbage(ops):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "spool"
        shutil.copytree(pristine_spool(), directory)
        files = segments(directory)
        for index, kind, where, count in ops:
            path = files[index]
            size = path.stat().st_size
            pos = int(where * size)
            if kind == "flip":
                for offset in range(pos, min(pos + count, size)):
                    flip(path, offset)
            elif kind == "truncate":
                os.truncate(path, pos)
            elif kind == "zero":
                with open(path, "r+b") as f:
                    f.seek(pos)
                    f.write(b"\0" * min(count, size - pos))
            else:
                append_bytes(path, os.urandom(count))

        async def check() -> None:
            seqs, spool = await delivered(directory)
            added = await spool.append(b"the spool still works", {"added": True})
            await spool.close()
            expected = {**ORIGINALS, added: (b"the spool still works", {"added": True})}
            again, reopened = await delivered(directory, expected)  # recovery left it clean
            assert again == [*seqs, added]
            assert reopened.stats().torn_tails_cut == 0
            assert reopened.stats().quarantine_events == 0
            await reopened.close()

        asyncio.run(check())


async def test_damage_appearing_while_open_is_quarantined_and_skipped(four_segments):
    spool = await Spool.open(four_segments, fsync="batch")
    segment = segments(four_segments)[1]
    offset, seq = frame_offsets(segment)[1]
    flip(segment, offset + 2)  # bit rot in a header after recovery checked it

    seqs = []
    async for entry in spool.read(follow=False):
        assert (entry.payload, entry.meta) == ORIGINALS[entry.seq]
        seqs.append(entry.seq)

    assert seqs == [s for s in range(1, 13) if s != seq]
    (entry,) = spool.stats().quarantined
    assert "bad magic; skipped" in entry.reason
    await spool.close()


async def test_damaged_last_batch_does_not_stay_uncommitted_forever(four_segments):
    spool = await Spool.open(four_segments, fsync="batch")
    newest = segments(four_segments)[-1]
    offset, last = frame_offsets(newest)[-1]
    flip(newest, offset + HEADER_SIZE + 20)  # payload of the very last batch, after recovery

    async for entry in spool.read(follow=False):
        await spool.commit(entry.seq)

    assert last == 12
    assert spool.stats().batches == 0  # the skipped batch counts as done: the spool drained
    assert spool.stats().committed_seq == 12
    await spool.close()
