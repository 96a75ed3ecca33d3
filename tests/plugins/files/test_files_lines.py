"""LineSplitter: complete lines out, exact resume offsets, bounded memory for huge lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tstoraged_files.lines import LineSplitter


def test_complete_lines_come_out_and_the_partial_line_waits_for_its_newline() -> None:
    splitter = LineSplitter()
    block = splitter.feed(b"a\nbb\ncc")
    assert (block.data, block.first_line, block.count, block.end_offset) == (b"a\nbb", 1, 2, 5)
    assert splitter.pending_bytes == 2
    block = splitter.feed(b"c\n")
    assert (block.data, block.first_line, block.count, block.end_offset) == (b"ccc", 3, 1, 9)


def test_a_chunk_without_newline_yields_nothing_and_keeps_the_resume_offset() -> None:
    splitter = LineSplitter(offset=100, line=7)
    block = splitter.feed(b"no newline yet")
    assert block.empty
    assert block.end_offset == 100
    assert splitter.line == 7


def test_finish_hands_out_the_last_line_without_newline() -> None:
    splitter = LineSplitter()
    splitter.feed(b"x\ny")
    block = splitter.finish()
    assert (block.data, block.first_line, block.count, block.end_offset) == (b"y", 2, 1, 3)
    assert splitter.finish().empty


def test_a_line_over_the_bound_is_skipped_without_being_held_and_reported_once() -> None:
    splitter = LineSplitter(max_line_bytes=16)
    assert splitter.feed(b"ok\n" + b"X" * 20).count == 1
    assert splitter.pending_bytes == 20
    for _ in range(100):  # a 100 KB line: nothing of it is kept
        block = splitter.feed(b"X" * 1000)
        assert block.empty
    block = splitter.feed(b"XX\nnext\n")
    assert block.oversized == [(2, b"X" * 20)]
    assert (block.data, block.first_line, block.count) == (b"next", 3, 1)
    assert block.end_offset == 3 + 20 + 100 * 1000 + 3 + 5


def test_a_huge_line_at_the_end_of_a_complete_file_is_reported_by_finish() -> None:
    splitter = LineSplitter(max_line_bytes=16)
    splitter.feed(b"X" * 40)
    block = splitter.finish()
    assert block.oversized == [(1, b"X" * 40)]
    assert block.end_offset == 40


def test_offsets_and_line_numbers_are_exact_for_any_chunking() -> None:
    data = b"".join(b"line %d\n" % i for i in range(1, 200)) + b"tail"
    for size in (1, 3, 7, 64, 1000):
        splitter = LineSplitter()
        lines: list[bytes] = []
        for start in range(0, len(data), size):
            block = splitter.feed(data[start : start + size])
            if block.count:
                assert block.first_line == len(lines) + 1
                lines.extend(block.data.split(b"\n"))
            assert block.end_offset == sum(len(x) + 1 for x in lines)
        assert lines == [b"line %d" % i for i in range(1, 200)]
        assert splitter.finish().data == b"tail"


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
    bound=st.integers(min_value=16, max_value=32),
)
def test_any_chunking_yields_the_same_lines_offsets_and_oversized_reports(
    lines: list[bytes], cuts: list[int], bound: int
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter(max_line_bytes=bound)
    kept: dict[int, bytes] = {}
    oversized: list[int] = []
    start, turn = 0, 0
    while start < len(data):
        size = cuts[turn % len(cuts)]
        block = splitter.feed(data[start : start + size])
        start += size
        turn += 1
        oversized += [n for n, _ in block.oversized]
        if block.count:
            for i, text in enumerate(block.data.split(b"\n")):
                kept[block.first_line + i] = text
        # The resume offset is always the end of a whole line.
        assert block.end_offset == sum(len(x) + 1 for x in lines[: splitter.line])
    long_lines = [n for n, line in enumerate(lines, 1) if len(line) > bound]
    assert sorted(oversized) == [n for n in long_lines if n not in kept]
    for n, text in kept.items():
        assert text == lines[n - 1]
    assert sorted([*kept, *oversized]) == list(range(1, len(lines) + 1))
