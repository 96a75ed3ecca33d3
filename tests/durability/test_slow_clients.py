"""Issue 10 item 4: slow clients cannot lock out the server (a real tstorage-server process).

Slowloris connections send one byte of a request at a time, each byte well within any
per-read timeout. The server gives each request header / record frame a deadline of its own
(``--frame-timeout`` plus ``--min-rate``), refuses connections beyond ``--max-connections``
with an error header, and rate-limits its per-connection log lines.
"""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.protocol.server import encode_error
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseStatus
from tstorage_server.testing import ServerProcess
from tstoraged.testing import wait_until

pytestmark = pytest.mark.slow

LIMIT = 16
PUT_HEADER = (5).to_bytes(4, "little") + (0).to_bytes(8, "little")
# A valid PUT of one record with a 200-byte payload: 244 bytes, ~49 s at the pace below.
SLOW_REQUEST = (
    PUT_HEADER
    + (1).to_bytes(4, "little")
    + (224).to_bytes(4, "little")
    + (220).to_bytes(4, "little")
    + bytes(220)
)
PACE_S = 0.2  # one byte per connection per 0.2 s: 5 B/s, far below --min-rate


def trickle(sockets: list[socket.socket], sent: dict[socket.socket, int]) -> list[socket.socket]:
    """Send the next byte of a PUT request on every socket; return those the server closed."""
    closed = []
    readable, _, _ = select.select(sockets, [], [], 0)
    for sock in sockets:
        if sock in readable:
            closed.append(sock)
            continue
        try:
            if sent[sock] < len(SLOW_REQUEST):
                sock.send(SLOW_REQUEST[sent[sock] : sent[sock] + 1])
                sent[sock] += 1
        except OSError:
            closed.append(sock)
    return closed


def normal_client_round_trip(port: int, mid: int) -> None:
    with Channel("127.0.0.1", port, BytesPayloadType(), timeout=10) as channel:
        key = Key(1, mid, 0, 1000 + mid, 0)
        assert channel.put([Record(key, b"x")]).status == ResponseStatus.OK
        low, high = Key(1, mid, 0, 0, Key.min().acq), Key(2, mid + 1, 1, 10**6, Key.max().acq)
        stored = [item for item in channel.get_iter(low, high) if isinstance(item, Record)]
        assert [record.key.mid for record in stored] == [mid]


def test_slow_connections_up_to_the_limit_do_not_lock_out_a_normal_client() -> None:
    args = ["--max-connections", str(LIMIT), "--frame-timeout", "6", "--min-rate", "4096"]
    with ServerProcess(extra_args=args) as server:
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(LIMIT - 1)]
        sent = dict.fromkeys(slow, 0)
        trickle(slow, sent)
        # Up to one below the limit: a normal client is served at once.
        normal_client_round_trip(server.port, 1)
        wait_until(lambda: events(server, "connection_close"), 10, "its slot freed")
        # At the limit: a new connection is refused politely (an error header, then EOF).
        slow.append(socket.create_connection(("127.0.0.1", server.port)))
        sent[slow[-1]] = 0

        def refused_once() -> bool:
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.settimeout(0.5)
            try:
                answer = sock.recv(64)
            except TimeoutError:  # accepted after all: the server was not full yet
                slow.append(sock)
                sent[sock] = 0
                return False
            sock.close()
            assert answer == encode_error()
            return True

        wait_until(refused_once, 5, "a connection refused")
        for index in range(40):
            assert refused_once(), (index, server.output[-4:])
        # The trickling connections are closed by the frame deadline, not kept alive by
        # their bytes; then the normal client gets in again.
        open_slow = list(slow)

        def slow_ones_closed() -> bool:
            time.sleep(PACE_S)  # pacing of the slow load, not synchronization
            for sock in trickle(open_slow, sent):
                open_slow.remove(sock)
                sock.close()
            return not open_slow

        wait_until(slow_ones_closed, 30, "slow connections closed by the server")
        normal_client_round_trip(server.port, 2)
    refusals = events(server, "connection_refused")
    assert 0 < len(refusals) <= 21, len(refusals)  # 40 refusals, rate-limited
    failures = events(server, "request_failed")
    reasons = [str(event["reason"]) for event in failures]
    assert any("too slow" in reason for reason in reasons), reasons


def test_a_flood_of_malformed_connections_is_logged_at_a_bounded_rate() -> None:
    # Each connection sends garbage, gets the error header and is closed: three log events
    # (connection_open, request_failed, connection_close), each at most BURST per window.
    flood, burst, window_s = 300, 20, 10.0  # tstorage_server.logs.LogLimiter's defaults
    with ServerProcess() as server:
        started = time.monotonic()
        for _ in range(flood):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(b"\xde\xad\xbe\xef" * 4)
                assert sock.recv(64) == encode_error()
        windows = int((time.monotonic() - started) // window_s) + 1
        wait_until(lambda: len(events(server, "connection_close")) >= 1, 10, "a close logged")
        output_bytes = sum(len(line) + 1 for line in server.output)
    logged = {name: len(events(server, name)) for name in ("connection_open", "request_failed")}
    print(f"{flood} malformed connections: {logged}, {output_bytes / flood:.0f} log bytes each")
    for name, count in logged.items():
        assert 0 < count <= burst * windows < flood, (name, count, windows)


def events(server: ServerProcess, name: str) -> list[dict[str, object]]:
    out = []
    for line in server.output:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            out.append(event)
    return out
