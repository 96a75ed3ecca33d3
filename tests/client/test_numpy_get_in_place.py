"""numpy get() received in place: the same outcome as the parser that joins reads.

``get()`` on a NumpyPayloadType without a memory_limit runs ``GetIntoParser``: the response
lands in one growing buffer and the records are handed out as one array over it. Its
outcome (status, acq, data) must be the one ``GetResponseParser`` gives for the same bytes
(the path of every other get, and of numpy with a memory_limit), however the bytes are cut
into reads, for any response: many sizes, a response cut anywhere, a wrong record size, a
refused request, an error after the records. Then the same over real sockets on both
channels: a server that writes in small fragments, TLS, a large response, a stalled server.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import pytest
import trustme
from client_testkit import scripted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tstorage_client._operations import Operation, get_into_operation, get_operation
from tstorage_client.channel import Channel
from tstorage_client.payload_type import NumpyPayloadType
from tstorage_client.protocol.client import (
    NEED_DATA,
    GetIntoParser,
    GetResponseParser,
    ReadInto,
    encode_get,
)
from tstorage_client.protocol.codecs import codec_for
from tstorage_client.record import Key
from tstorage_client.response import ResponseGet, ResponseStatus

HEADER = struct.Struct("<iQ")
I32 = struct.Struct("<i")
PAYLOADS = ["<f8", [("x", "<i4"), ("y", "<f4")], None, "<i2"]
REQUEST = encode_get(Key.min(), Key.max())


def _rows(payload_type: NumpyPayloadType, count: int, seed: int = 0) -> bytes:
    """``count`` GET records of ``payload_type`` on the wire (random keys and values)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(count, payload_type.parsing_dtype)
    rows["_size"] = payload_type.parsing_dtype.itemsize - 4
    for name in payload_type.parsing_dtype.names[1:]:  # type: ignore[index]
        column = rows[name]
        if column.dtype.kind == "f":
            rows[name] = rng.random(count)
        else:
            info = np.iinfo(column.dtype)
            rows[name] = rng.integers(info.min, info.max, count, endpoint=True)
    return rows.tobytes()


def _response(body: bytes, acq: int = 7, tail_status: int = 0) -> bytes:
    return (
        HEADER.pack(0, 0)
        + body
        + I32.pack(0)
        + HEADER.pack(tail_status, 8)
        + struct.pack("<q", acq)
    )


def _drive(operation: Operation[ResponseGet[Any]], data: bytes, cuts: list[int]) -> Any:
    """Run a get operation over ``data`` arriving in the pieces ``cuts`` make, then EOF."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    pending = b""
    instruction = operation.send(None)
    assert instruction == REQUEST
    instruction = operation.send(None)
    try:
        while True:
            if not pending and pieces:
                pending = pieces.pop(0)
            if instruction is NEED_DATA:
                piece, pending = pending, b""
                instruction = operation.send(piece)
            else:
                assert type(instruction) is ReadInto
                count = min(len(instruction.buffer), len(pending))
                instruction.buffer[:count] = pending[:count]
                pending = pending[count:]
                instruction = operation.send(count)
    except StopIteration as stop:
        return stop.value


def _outcome(response: ResponseGet[Any]) -> tuple[Any, ...]:
    arrays = response.data
    assert isinstance(arrays, list)
    assert arrays
    assert all(isinstance(a, np.ndarray) for a in arrays)
    return (
        response.status,
        response.acq,
        [(a.dtype, len(a), a.tobytes()) for a in arrays],
    )


def _both(payload_type: NumpyPayloadType, data: bytes, cuts: list[int]) -> tuple[Any, Any]:
    """(outcome of the joining parser, outcome of the in-place one) for the same bytes."""
    codec = codec_for(payload_type)
    joined = get_operation(REQUEST, GetResponseParser(codec, None, batch_per_read=False))
    in_place = get_into_operation(REQUEST, GetIntoParser(codec))  # type: ignore[arg-type]
    return _outcome(_drive(joined, data, cuts)), _outcome(_drive(in_place, data, cuts))


def _break(data: bytes, record: int, kind: str, size: int) -> bytes:
    """``data`` (a response) with one thing broken at record ``record`` (record size 4+n)."""
    at = 12 + record * size
    if kind == "cut":
        return data[: at + size // 2]
    if kind == "length":  # out of range
        return data[:at] + I32.pack(3) + data[at + 4 :]
    if kind == "other size":  # a valid size, not the dtype's
        return data[:at] + I32.pack(size) + data[at + 4 :]
    if kind == "terminator":  # an early end: what follows is read as the tail
        return data[:at] + I32.pack(0) + data[at + 4 :]
    if kind == "refused":
        return HEADER.pack(3, 0) + data[12:]
    if kind == "header size":
        return HEADER.pack(0, 5) + data[12:]
    if kind == "tail error":
        return data[:-20] + HEADER.pack(9, 8) + data[-8:]
    if kind == "tail size":
        return data[:-20] + HEADER.pack(0, 9) + data[-8:]
    assert kind == "none"
    return data


KINDS = [
    "none",
    "cut",
    "length",
    "other size",
    "terminator",
    "refused",
    "header size",
    "tail error",
    "tail size",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(PAYLOADS),
    st.integers(0, 300),
    st.integers(0, 299),
    st.sampled_from(KINDS),
    st.lists(st.integers(0, 20_000), max_size=12),
    st.integers(-(2**63), 2**63 - 1),
)
def test_in_place_get_gives_what_the_joining_parser_gives(
    payload: Any, count: int, broken: int, kind: str, cuts: list[int], acq: int
) -> None:
    payload_type = NumpyPayloadType(payload)
    size = payload_type.parsing_dtype.itemsize
    data = _response(_rows(payload_type, count, broken), acq)
    data = _break(data, min(broken, count), kind, size)
    joined, in_place = _both(payload_type, data, cuts)
    assert in_place == joined


@pytest.mark.parametrize("count", [0, 1, 2, 1000, 23_831, 23_832, 100_000])
@pytest.mark.parametrize("piece", [1 << 10, 65_537, 1 << 20, None])
def test_many_sizes_and_reads_give_one_array_of_the_records(count: int, piece: int | None) -> None:
    # 23 831 / 23 832 records of 44 bytes straddle the 1 MiB at which the result stops being
    # copied out of the mapping; 100 000 records (4.4 MB) make the buffer grow several times.
    payload_type = NumpyPayloadType("<f8")
    rows = _rows(payload_type, count, count)
    data = _response(rows, acq=12345)
    cuts = [] if piece is None else list(range(piece, len(data), piece))
    joined, in_place = _both(payload_type, data, cuts)
    assert in_place == joined
    status, acq, [(dtype, length, raw)] = in_place
    assert (status, acq, dtype, length, raw) == (
        ResponseStatus.OK,
        12345,
        payload_type.parsing_dtype,
        count,
        rows,
    )


def test_the_array_is_writable_and_outlives_the_parser() -> None:
    payload_type = NumpyPayloadType("<f8")
    for count in (10, 50_000):  # copied out, and kept in the mapping
        rows = _rows(payload_type, count)
        operation = get_into_operation(REQUEST, GetIntoParser(codec_for(payload_type)))  # type: ignore[arg-type]
        response = _drive(operation, _response(rows), [])
        del operation
        (array,) = response.data
        assert array.flags.writeable
        array["v0"][0] = 1.5
        assert array["v0"][0] == 1.5
        assert array[1:].tobytes() == rows[payload_type.parsing_dtype.itemsize :]


def test_a_memory_limit_keeps_the_joining_path() -> None:
    payload_type = NumpyPayloadType("<f8")
    channel = Channel("127.0.0.1", 1, payload_type, memory_limit=1 << 20)
    operation = channel._get_operation(Key.min(), Key.max())
    assert operation is not None
    assert operation.gi_code.co_name == "get_operation"  # type: ignore[attr-defined]
    operation.close()
    channel.memory_limit = None
    operation = channel._get_operation(Key.min(), Key.max())
    assert operation is not None
    assert operation.gi_code.co_name == "get_into_operation"  # type: ignore[attr-defined]
    operation.close()


# ------------------------------------------------------------------ over real sockets


def _server(data: bytes, piece: int | None, cut: bool) -> Any:
    """A handler: answer each GET request with ``data`` in writes of ``piece`` bytes (a
    ``cut`` response once, then the connection is closed)."""

    def handle(conn: socket.socket, stream: BinaryIO) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (request := stream.read(len(REQUEST))) == REQUEST:
            step = piece or len(data)
            for at in range(0, len(data), step):
                conn.sendall(data[at : at + step])
            if cut:
                return
        assert request == b""

    return handle


def _expected(payload_type: NumpyPayloadType, data: bytes) -> tuple[Any, ...]:
    """The outcome of the joining parser for the whole of ``data``."""
    return _both(payload_type, data, [])[0]


@pytest.fixture(scope="module")
def tls(tls_ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    tls_ca.configure_trust(client)
    return server, client


def _cases() -> Iterator[tuple[str, int, str, int | None]]:
    yield "small, fragmented", 300, "none", 7
    yield "large, fragmented", 60_000, "none", 4093
    yield "large, one write", 200_000, "none", None
    yield "cut in a record", 5_000, "cut", 1000
    yield "other size", 5_000, "other size", 333
    yield "error after the records", 5_000, "tail error", None


@pytest.mark.parametrize("use_tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize(("name", "count", "broken", "piece"), list(_cases()))
async def test_channels_get_the_same_array_from_a_real_peer(
    make_client: Any,
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    use_tls: bool,
    name: str,
    count: int,
    broken: str,
    piece: int | None,
) -> None:
    payload_type = NumpyPayloadType("<f8")
    data = _break(_response(_rows(payload_type, count), 99), count // 2, broken, 44)
    server_context, client_context = tls if use_tls else (None, None)
    with scripted(_server(data, piece, broken == "cut"), server_context) as peer:
        client = make_client(peer.host, peer.port, payload_type, ssl_context=client_context)
        assert (await client.connect()).is_ok()
        response = await client.get()
        assert _outcome(response) == _expected(payload_type, data), name
        if response.is_ok():  # the connection is reused for the next request
            assert client.connected
            assert _outcome(await client.get()) == _expected(payload_type, data)
        await client.close()


async def test_a_server_that_stalls_mid_response_ends_in_disconnected_with_the_records(
    make_client: Any,
) -> None:
    payload_type = NumpyPayloadType("<f8")
    rows = _rows(payload_type, 1000)
    head = HEADER.pack(0, 0) + rows + rows[:10]  # and then nothing: the read times out

    def stall(conn: socket.socket, stream: BinaryIO) -> None:
        assert stream.read(len(REQUEST)) == REQUEST
        conn.sendall(head)
        peer.release.wait(30)

    with scripted(stall) as peer:
        client = make_client(peer.host, peer.port, payload_type, timeout=0.5)
        assert (await client.connect()).is_ok()
        response = await client.get()
        assert response.status == ResponseStatus.DISCONNECTED
        assert [a.tobytes() for a in response.data] == [rows]
        assert not client.connected
