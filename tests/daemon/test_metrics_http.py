"""The HTTP endpoint: /metrics, /healthz, /readyz, /status, and robustness to bad requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tstoraged.observe.http import ObservabilityServer, Readiness
from tstoraged.observe.metrics import Metrics


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


class Switch:
    """A readiness check the test flips."""

    def __init__(self) -> None:
        self.state = Readiness(False, "tstorage not connected")

    def __call__(self) -> Readiness:
        return self.state


@pytest.fixture
def readiness() -> Switch:
    return Switch()


@pytest.fixture
async def server(readiness: Switch) -> AsyncIterator[ObservabilityServer]:
    metrics = Metrics(process_metrics=False)
    metrics.source_state("line-3", "running")
    metrics.records_received("line-3", 5)
    async with ObservabilityServer(
        metrics, port=0, readiness=readiness, read_timeout=0.5
    ) as running:
        yield running


async def exchange(server: ObservabilityServer, request: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()  # the server closes the connection after its answer
    writer.close()
    await writer.wait_closed()
    return Reply(raw)


async def get(server: ObservabilityServer, path: str, *headers: str) -> Reply:
    head = "".join(f"{h}\r\n" for h in headers)
    return await exchange(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())


async def test_metrics_in_prometheus_text_format(server: ObservabilityServer) -> None:
    reply = await get(server, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert reply.headers["connection"] == "close"
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert b'tstoraged_records_received_total{source="line-3"} 5.0' in reply.body


async def test_metrics_negotiates_openmetrics(server: ObservabilityServer) -> None:
    reply = await get(server, "/metrics", "Accept: application/openmetrics-text; version=1.0.0")
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.body.rstrip().endswith(b"# EOF")


async def test_healthz_answers_ok_while_the_loop_runs(server: ObservabilityServer) -> None:
    reply = await get(server, "/healthz")
    assert (reply.status, reply.body) == (200, b"ok\n")


async def test_readyz_follows_the_readiness_check(
    server: ObservabilityServer, readiness: Switch
) -> None:
    not_ready = await get(server, "/readyz")
    assert not_ready.status == 503
    assert not_ready.json() == {"ready": False, "reason": "tstorage not connected"}

    readiness.state = Readiness(True)
    ready = await get(server, "/readyz?verbose=1")
    assert ready.status == 200
    assert ready.json()["ready"] is True


async def test_status_is_the_snapshot_with_readiness(server: ObservabilityServer) -> None:
    reply = await get(server, "/status")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    document = reply.json()
    assert document["version"]
    assert "uptime_s" in document
    assert document["sources"]["line-3"]["received"] == 5  # type: ignore[index]
    assert document["sources"]["line-3"]["state"] == "running"  # type: ignore[index]
    assert document["ready"] == {"ready": False, "reason": "tstorage not connected"}


async def test_head_has_headers_and_no_body(server: ObservabilityServer) -> None:
    reply = await exchange(server, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert reply.status == 200
    assert reply.headers["content-length"] == "3"
    assert reply.body == b""


async def test_unknown_path_is_404_and_other_methods_405(server: ObservabilityServer) -> None:
    assert (await get(server, "/nope")).status == 404
    post = await exchange(server, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert post.status == 405
    assert post.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics SPDY/3\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /m\xe9trics HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",  # a TLS hello by mistake
    ],
)
async def test_malformed_requests_get_400(
    server: ObservabilityServer, request_bytes: bytes
) -> None:
    assert (await exchange(server, request_bytes)).status == 400


async def test_oversized_heads_are_refused(server: ObservabilityServer) -> None:
    long_line = await exchange(server, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
    assert long_line.status == 431
    many = "".join(f"X-H{i}: v\r\n" for i in range(100))
    too_many = await exchange(server, f"GET / HTTP/1.1\r\n{many}\r\n".encode())
    assert too_many.status == 431


async def test_a_silent_client_times_out_with_408(server: ObservabilityServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never finishes the head
    await writer.drain()
    reply = Reply(await reader.read())
    writer.close()
    await writer.wait_closed()
    assert reply.status == 408


async def test_server_keeps_serving_after_bad_clients(server: ObservabilityServer) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()  # connect and hang up without a request
    await writer.wait_closed()
    await exchange(server, b"\x00\x01\x02\r\n")
    assert (await get(server, "/healthz")).status == 200


async def test_a_failing_readiness_check_is_a_500_not_a_crash() -> None:
    def broken() -> Readiness:
        raise RuntimeError("boom")

    async with ObservabilityServer(
        Metrics(process_metrics=False), port=0, readiness=broken
    ) as server:
        assert (await get(server, "/readyz")).status == 500
        assert (await get(server, "/healthz")).status == 200


async def test_stop_releases_the_port() -> None:
    server = ObservabilityServer(Metrics(process_metrics=False), port=0)
    await server.start()
    port = server.port
    await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
