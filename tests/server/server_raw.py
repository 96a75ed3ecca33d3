"""A minimal raw-bytes TStorage client for server tests, written independently of the client.

Requests are built here with ``struct`` straight from the protocol doc, and responses are
read byte-exactly, so the server is checked against the doc rather than against our client.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

HEADER = struct.Struct("<iQ")
KEY = struct.Struct("<iqiqq")
I32 = struct.Struct("<i")
I64 = struct.Struct("<q")

KEY_MIN = (0, -(2**63), -(2**31), -(2**63), -(2**63))
KEY_MAX = (2**31 - 1, 2**63 - 1, 2**31 - 1, 2**63 - 1, 2**63 - 1)

Key5 = tuple[int, int, int, int, int]


GET_FRAME = struct.Struct("<iiqiqq")  # n, then the 32-byte key


def vectors() -> dict[str, dict]:
    """The protocol vectors (tests/data/tstorage-vectors.json) by name."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "data", "tstorage-vectors.json")
    with open(path) as file:
        return {case["name"]: case for case in json.load(file)["cases"]}


def encode_range(rtype: int, key_min: Sequence[int], key_max: Sequence[int]) -> bytes:
    return HEADER.pack(rtype, 64) + KEY.pack(*key_min) + KEY.pack(*key_max)


def encode_get(key_min: Sequence[int] = KEY_MIN, key_max: Sequence[int] = KEY_MAX) -> bytes:
    return encode_range(1, key_min, key_max)


def encode_get_acq(key_min: Sequence[int] = KEY_MIN, key_max: Sequence[int] = KEY_MAX) -> bytes:
    return encode_range(7, key_min, key_max)


def encode_put(records: Iterable[tuple[Sequence[int], bytes]], with_acq: bool = False) -> bytes:
    """One batch per record, in order (cids may repeat and interleave)."""
    out = [HEADER.pack(6 if with_acq else 5, 0)]
    for key, payload in records:
        cid, mid, moid, cap, acq = key
        wire_key = (
            struct.pack("<qiqq", mid, moid, cap, acq)
            if with_acq
            else struct.pack("<qiq", mid, moid, cap)
        )
        record = I32.pack(len(wire_key) + len(payload)) + wire_key + payload
        out.append(struct.pack("<ii", cid, len(record)) + record)
    out.append(I32.pack(-1))
    return b"".join(out)


def encode_put_batches(records: Sequence[tuple[Key5, bytes]], with_acq: bool = False) -> bytes:
    """A PUT / PUTA request with one batch per run of records of one cid (as clients send)."""
    out = [HEADER.pack(6 if with_acq else 5, 0)]
    i = 0
    while i < len(records):
        cid = records[i][0][0]
        body = []
        while i < len(records) and records[i][0][0] == cid:
            (_, mid, moid, cap, acq), payload = records[i]
            key = (
                struct.pack("<qiqq", mid, moid, cap, acq)
                if with_acq
                else struct.pack("<qiq", mid, moid, cap)
            )
            body.append(I32.pack(len(key) + len(payload)) + key + payload)
            i += 1
        batch = b"".join(body)
        out.append(struct.pack("<ii", cid, len(batch)) + batch)
    out.append(I32.pack(-1))
    return b"".join(out)


def split_frames(data: bytes) -> list[tuple[tuple[int, ...], bytes]]:
    """(key, payload) of each GET record frame in ``data`` (frames back to back)."""
    out, pos = [], 0
    while pos < len(data):
        n, *key = GET_FRAME.unpack_from(data, pos)
        out.append((tuple(key), data[pos + 36 : pos + 4 + n]))
        pos += 4 + n
    return out


@dataclass
class GetResult:
    ok: bool
    records: list[tuple[Key5, bytes]]
    acq: int | None


class ServerClosed(Exception):
    """The server closed the connection."""


class RawClient:
    """Blocking socket speaking raw protocol bytes."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", sock: socket.socket | None = None
    ) -> None:
        self.sock = sock or socket.create_connection((host, port), timeout=30)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(min(size, 1 << 20))
            if not chunk:
                raise ServerClosed
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def header(self) -> tuple[int, int]:
        return HEADER.unpack(self.recv_exactly(12))

    def at_eof(self) -> bool:
        """True when the server has closed the connection (reads until EOF or a timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def put(
        self, records: Iterable[tuple[Sequence[int], bytes]], with_acq: bool = False
    ) -> tuple[int, int, int]:
        """(status, acq_min, acq_max); acqs are None-like -1 on error."""
        self.send(encode_put(records, with_acq))
        return self.put_response()

    def put_response(self) -> tuple[int, int, int]:
        status, size = self.header()
        if status != 0:
            assert size == 0
            return status, -1, -1
        assert size == 16
        acq_min, acq_max = struct.unpack("<qq", self.recv_exactly(16))
        return status, acq_min, acq_max

    def get_acq(
        self, key_min: Sequence[int] = KEY_MIN, key_max: Sequence[int] = KEY_MAX
    ) -> tuple[int, int | None]:
        self.send(encode_get_acq(key_min, key_max))
        status, size = self.header()
        if status != 0:
            return status, None
        assert size == 8
        return status, I64.unpack(self.recv_exactly(8))[0]

    def get(self, key_min: Sequence[int] = KEY_MIN, key_max: Sequence[int] = KEY_MAX) -> GetResult:
        self.send(encode_get(key_min, key_max))
        return self.get_response()

    def get_response(self) -> GetResult:
        status, size = self.header()
        if status != 0:
            return GetResult(False, [], None)
        assert size == 0
        records = []
        while True:
            (n,) = I32.unpack(self.recv_exactly(4))
            if n == 0:
                break
            body = self.recv_exactly(n)
            records.append((KEY.unpack_from(body), body[32:]))
        status, size = self.header()
        if status != 0:
            return GetResult(False, records, None)
        assert size == 8
        return GetResult(True, records, I64.unpack(self.recv_exactly(8))[0])
