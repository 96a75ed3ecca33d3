"""Test helpers for tstorage_client: an independent request decoder and a scripted peer.

The decoder is deliberately written from the protocol document, separately from the library,
so the encoders are checked against a second reading of the spec. The scripted peer is a
loopback TCP server (optionally TLS) whose per-connection behaviour is a plain function:
hostile, truncated or slow servers are a few lines each.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

HEADER = struct.Struct("<iQ")
I32 = struct.Struct("<i")
KEY = struct.Struct("<iqiqq")
PUT_KEY = struct.Struct("<qiq")
PUTA_KEY = struct.Struct("<qiqq")


@dataclass
class Batch:
    """One per-cid batch of a PUT/PUTA as it was on the wire."""

    cid: int
    batch_bytes: int
    records: list[tuple[tuple[int, int, int, int, int], bytes]] = field(default_factory=list)


@dataclass
class Request:
    """A decoded request: GET/GET_ACQ carry a range, PUT/PUTA carry batches."""

    type: int
    key_min: tuple[int, ...] | None = None
    key_max: tuple[int, ...] | None = None
    batches: list[Batch] = field(default_factory=list)

    @property
    def records(self) -> list[tuple[tuple[int, int, int, int, int], bytes]]:
        return [record for batch in self.batches for record in batch.records]


class _Reader:
    """Exact reads from a byte stream; raises EOFError when it ends early."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if data is None or len(data) != size:
            raise EOFError(f"wanted {size} bytes, got {0 if data is None else len(data)}")
        return data

    def unpack(self, st: struct.Struct) -> tuple[int, ...]:
        return st.unpack(self.read(st.size))


def read_request(stream: BinaryIO) -> Request:
    """Read one complete request from a binary stream (a socket file or io.BytesIO)."""
    reader = _Reader(stream)
    kind, size = reader.unpack(HEADER)
    if kind in (1, 7):
        assert size == 64, f"range request with size {size}"
        return Request(kind, reader.unpack(KEY), reader.unpack(KEY))
    assert kind in (5, 6), f"unexpected request type {kind}"
    assert size == 0
    key_struct = PUTA_KEY if kind == 6 else PUT_KEY
    request = Request(kind)
    while True:
        (cid,) = reader.unpack(I32)
        if cid < 0:
            return request
        (batch_bytes,) = reader.unpack(I32)
        batch = Batch(cid, batch_bytes)
        left = batch_bytes
        while left > 0:
            (n,) = reader.unpack(I32)
            body = reader.read(n)
            key = key_struct.unpack(body[: key_struct.size])
            acq = key[3] if kind == 6 else -1
            batch.records.append(((cid, key[0], key[1], key[2], acq), body[key_struct.size :]))
            left -= 4 + n
        assert left == 0, "records do not add up to batch_bytes"
        request.batches.append(batch)


def decode_request(data: bytes) -> Request:
    """Decode one request from bytes; all bytes must be consumed."""
    import io

    stream = io.BytesIO(data)
    request = read_request(stream)
    assert stream.read() == b"", "bytes left after the request"
    return request


def get_response(records: list[tuple[tuple[int, ...], bytes]], acq: int) -> bytes:
    """A successful GET response with these (key, payload) records."""
    body = b"".join(
        I32.pack(32 + len(payload)) + KEY.pack(*key) + payload for key, payload in records
    )
    return HEADER.pack(0, 0) + body + I32.pack(0) + HEADER.pack(0, 8) + struct.pack("<q", acq)


def put_ok(acq_min: int, acq_max: int) -> bytes:
    return HEADER.pack(0, 16) + struct.pack("<qq", acq_min, acq_max)


Handler = Callable[[socket.socket, BinaryIO], None]


class ScriptedPeer:
    """A loopback server (port 0) that runs ``handler(conn, stream)`` for each connection.

    ``requests`` collects what handlers append; ``connections`` counts accepted connections.
    The handler owns the connection; it is closed when the handler returns.
    """

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.connections = 0
        self.release = threading.Event()  # handlers may wait on it (e.g. to stall)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            with conn, conn.makefile("rb") as stream:
                self.handler(conn, stream)
        except (OSError, EOFError):
            pass  # the client went away: part of several tests
        except BaseException as error:  # surfaced by close()
            self.errors.append(error)

    def close(self) -> None:
        self.release.set()
        # shutdown() (unlike close()) wakes threads blocked in accept() or recv().
        for sock in [self._listener, *self._conns]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepting.join(10)
        for thread in self._threads:
            thread.join(10)
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> ScriptedPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def scripted(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> Iterator[ScriptedPeer]:
    """``with scripted(handler) as peer:`` a ScriptedPeer that is closed afterwards."""
    peer = ScriptedPeer(handler, ssl_context)
    try:
        yield peer
    finally:
        peer.close()
