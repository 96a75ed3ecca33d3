"""The built-in generator source, driven through tstoraged.testing.RecordingContext."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

from tstoraged_generator import GeneratorConfig, GeneratorSource

from tstoraged.testing import RecordingContext


def generate(tmp_path: Path, **settings: object) -> RecordingContext:
    config = GeneratorConfig.model_validate({"type": "generator", "name": "gen", **settings})
    return RecordingContext(config, tmp_path)


async def test_emits_exactly_count_rows_in_chunks_with_the_default_mapping(tmp_path: Path) -> None:
    context = generate(tmp_path, rate=0, count=2500, chunk=1000, meters=5, channels=2)
    await GeneratorSource(context.config, context).run()
    assert [len(records) for records in context.emitted] == [1000, 1000, 500]
    keys = [record.key for record in context.records]
    assert {key.cid for key in keys} == {1}
    assert Counter((key.mid, key.moid) for key in keys) == {
        (meter, channel): 250 for meter in range(5) for channel in range(2)
    }
    # Every row has its own capture time, so no two rows share a key.
    assert len({(key.mid, key.moid, key.cap) for key in keys}) == 2500
    assert all(len(record.value) == 8 for record in context.records)  # "<d"
    assert context.rejected == []


async def test_the_mapping_comes_from_the_config(tmp_path: Path) -> None:
    context = generate(
        tmp_path,
        rate=0,
        count=100,
        key={"cid": 9, "mid": "{meter}", "moid": 3},
        payload={"format": "<iq?", "fields": ["count", "seq", "ok"]},
    )
    await GeneratorSource(context.config, context).run()
    rows = [struct.unpack("<iq?", record.value) for record in context.records]
    assert [seq for _, seq, _ in rows] == list(range(100))
    assert {record.key.cid for record in context.records} == {9}
    assert {record.key.moid for record in context.records} == {3}


async def test_a_row_the_mapping_refuses_is_dead_lettered_and_the_rest_flow(tmp_path: Path) -> None:
    # mid comes from a lookup table that knows only meter 0: rows of meter 1 are refused.
    context = generate(
        tmp_path,
        rate=0,
        count=20,
        meters=2,
        channels=1,
        key={"cid": 1, "mid": {"field": "meter", "lookup": {"0": 100}}, "moid": 0},
    )
    await GeneratorSource(context.config, context).run()
    assert len(context.records) == 10
    assert {record.key.mid for record in context.records} == {100}
    assert len(context.rejected) == 10
    assert all(reject.origin.startswith("generator:") for reject in context.rejected)
