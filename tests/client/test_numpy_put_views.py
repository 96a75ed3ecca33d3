"""numpy put: per-cid batches are byte-shaped views of one packed array, whatever the order.

And AsyncChannel puts a 32 MB array to a peer that reads slowly: asyncio's transport keeps
what the socket did not take and slices it by items, so a view of structured items would be
cut at the wrong place (the put would hang or send garbage); the views are bytes-shaped.
"""

from __future__ import annotations

import socket
from typing import Any, BinaryIO

import numpy as np
from client_testkit import decode_request, put_ok, read_request, scripted

from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import NumpyPayloadType
from tstorage_client.protocol._codec import RecordCodec
from tstorage_client.protocol.client import encode_put
from tstorage_client.protocol.codecs import codec_for
from tstorage_client.record import Key, Record

FIELDS = [("cid", "<i4"), ("mid", "<i8"), ("moid", "<i4"), ("cap", "<i8"), ("v0", "<f8")]


def _array(count: int, seed: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    array = np.zeros(count, FIELDS)
    array["cid"] = rng.integers(0, 5, count)  # several cids, unsorted
    array["mid"] = rng.integers(-(2**40), 2**40, count)
    array["moid"] = rng.integers(-1000, 1000, count)
    array["cap"] = np.arange(count)
    array["v0"] = rng.random(count)
    return array


def _records(array: np.ndarray[Any, Any]) -> list[Record[float]]:
    return [
        Record(Key(int(r["cid"]), int(r["mid"]), int(r["moid"]), int(r["cap"])), float(r["v0"]))
        for r in array
    ]


def test_unsorted_cids_give_the_bytes_of_the_record_encoder() -> None:
    payload = NumpyPayloadType("<f8")
    for seed, count, max_batch in [(1, 10, 2**31 - 1), (2, 5000, 2**31 - 1), (3, 16_000, 10_000)]:
        array = _array(count, seed)
        got = b"".join(encode_put(codec_for(payload), array, max_batch_size=max_batch))
        want = b"".join(encode_put(RecordCodec(payload), _records(array), max_batch_size=max_batch))
        assert got == want
        assert decode_request(got).records  # and it decodes


def test_large_batches_are_byte_views_not_copies() -> None:
    payload = NumpyPayloadType("<f8")
    array = _array(200_000, 4)
    chunks = list(encode_put(codec_for(payload), array))
    views = [chunk for chunk in chunks if isinstance(chunk, memoryview)]
    assert views  # 5 cids x ~6 500 rows per step of 32 768 rows: those batches are views
    assert all(view.format == "B" and view.obj is not None for view in views)
    # Every batch of 64 KiB or more is one view (not copied into a join); smaller ones, of
    # the last step here, ride joined with their headers. Every row is sent once.
    request = decode_request(b"".join(chunks))
    large = [batch.batch_bytes for batch in request.batches if batch.batch_bytes >= 64 << 10]
    assert sorted(map(len, views)) == sorted(large)
    assert len(request.records) == 200_000


async def test_async_numpy_put_of_32_mb_to_a_slow_reader_completes() -> None:
    payload = NumpyPayloadType("<f8")
    count = 1 << 20  # 32 bytes per PUT row: 32 MiB
    array = _array(count, 5)
    array["cid"] = 3  # one cid: one batch of 32 MiB
    received: list[Any] = []

    def slow_reader(conn: socket.socket, stream: BinaryIO) -> None:
        # Decodes record by record from 8 KiB reads: far slower than the client writes, so
        # the client's socket buffer fills and asyncio must keep (and slice) the rest.
        received.append(read_request(stream))
        conn.sendall(put_ok(1, count))

    with scripted(slow_reader) as peer:
        async with AsyncChannel(peer.host, peer.port, payload) as channel:
            response = await channel.put(array)
    assert response.is_ok()
    (request,) = received
    assert {b.cid for b in request.batches} == {3}  # in batches of the default 1 MiB
    rows = request.records
    assert len(rows) == count
    assert rows[0] == (
        (3, int(array["mid"][0]), int(array["moid"][0]), 0, -1),
        array["v0"][:1].tobytes(),
    )
    assert rows[-1][0][3] == count - 1


def _layouts(count: int) -> list[tuple[str, np.ndarray[Any, Any], bool]]:
    """(name, input array, with_acq): every packing path of the numpy put."""
    payload = NumpyPayloadType("<f8")
    base = _array(count, 7)
    one_cid = base.copy()
    one_cid["cid"] = 4
    negative = one_cid.copy()
    negative["cid"][count // 2] = -1
    parsing = np.zeros(count, payload.parsing_dtype)
    for name in ("cid", "mid", "moid", "cap", "v0"):
        parsing[name] = base[name]
    parsing["acq"] = np.arange(count) * 3
    big_endian = base.astype([(n, t.replace("<", ">")) for n, t in FIELDS])
    return [
        ("wire layout, one cid (one memcpy)", one_cid, False),
        ("wire layout, several cids (row gather)", base, False),
        ("wire layout, an invalid cid", negative, False),
        ("strided input (block copy)", np.concatenate([base, base])[::2], False),
        ("parsing_dtype for puta (block copy at a shift)", parsing, True),
        ("parsing_dtype for put (field by field)", parsing, False),
        ("big-endian fields (field by field)", big_endian, False),
    ]


def test_every_packing_path_gives_the_bytes_of_the_record_encoder() -> None:
    payload = NumpyPayloadType("<f8")
    for count, max_batch in [(1, 2**31 - 1), (700, 2**31 - 1), (9000, 5000), (16_000, 1 << 20)]:
        for name, array, with_acq in _layouts(count):
            records = [
                Record(
                    Key(
                        int(r["cid"]),
                        int(r["mid"]),
                        int(r["moid"]),
                        int(r["cap"]),
                        int(r["acq"]) if with_acq else 0,
                    ),
                    float(r["v0"]),
                )
                for r in array
            ]
            got = b"".join(
                encode_put(codec_for(payload), array, with_acq=with_acq, max_batch_size=max_batch)
            )
            want = b"".join(
                encode_put(
                    RecordCodec(payload), records, with_acq=with_acq, max_batch_size=max_batch
                )
            )
            assert got == want, (name, count)


def test_the_input_array_is_left_as_it_was() -> None:
    # The one-memcpy path reads the cids back from the packed rows and writes the sizes
    # there: the caller's array must not change.
    array = _array(70_000, 8)
    array["cid"] = 2
    before = array.copy()
    chunks = list(encode_put(codec_for(NumpyPayloadType("<f8")), array))
    assert chunks
    assert array.tobytes() == before.tobytes()
