"""Property test: both backends answer every box exactly like a plain dict model would."""

from __future__ import annotations

import asyncio
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from server_raw import split_frames

from tstorage_client.record import Key
from tstorage_server.storage.base import Storage
from tstorage_server.storage.memory import MemoryStorage
from tstorage_server.storage.sqlite import SqliteStorage

small = st.integers(0, 3)
key = st.tuples(small, small, small, small, small)
request = st.lists(st.tuples(key, st.binary(max_size=3)), min_size=1, max_size=12)
# A valid box: in every component a low bound and a strictly higher one.
bounds = st.tuples(st.integers(0, 3), st.integers(1, 4)).map(lambda b: (b[0], b[0] + b[1]))
box = st.lists(bounds, min_size=5, max_size=5).map(lambda c: tuple(zip(*c, strict=True)))


async def run(storage: Storage, requests, boxes) -> list[list[tuple]]:
    for records in requests:
        put = storage.begin_put(with_acq=True)
        # One cid per batch, in order, as the parser hands them out.
        for (cid, mid, moid, cap, acq), payload in records:
            await put.add(cid, [(28 + len(payload), mid, moid, cap, acq, payload)])
        await put.commit()
    answers = []
    for key_min, key_max in boxes:
        data = b"".join([c async for c in storage.read(Key(*key_min), Key(*key_max))])
        answers.append(split_frames(data))
    await storage.close()
    return answers


def model(requests, boxes) -> list[list[tuple]]:
    store: dict[tuple, bytes] = {}
    for records in requests:
        for k, payload in records:
            store[k] = payload
    return [
        sorted(
            (k, p)
            for k, p in store.items()
            if all(lo <= c < hi for c, lo, hi in zip(k, key_min, key_max, strict=True))
        )
        for key_min, key_max in boxes
    ]


@settings(max_examples=40, deadline=None)
@given(
    requests=st.lists(request, min_size=1, max_size=4), boxes=st.lists(box, min_size=1, max_size=4)
)
def test_backends_match_the_model(requests, boxes) -> None:
    expected = model(requests, boxes)
    assert asyncio.run(run(MemoryStorage(), requests, boxes)) == expected

    async def sqlite_answers(path: str):
        return await run(await SqliteStorage.open(path), requests, boxes)

    with tempfile.TemporaryDirectory() as tmp:
        assert asyncio.run(sqlite_answers(tmp)) == expected
