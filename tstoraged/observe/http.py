"""The daemon's tiny HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``, ``/status``.

A deliberately small HTTP/1.1 server on ``asyncio.start_server``: one request per connection
(``Connection: close``), GET and HEAD only, a request head of bounded size read within a
timeout. It serves Prometheus scrapes and ``tstoraged status`` on a loopback port; anything
malformed gets a 4xx answer and never disturbs the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client.exposition import choose_encoder

from tstoraged.observe.metrics import Metrics

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ObservabilityServer",
    "Readiness",
    "ReadinessCheck",
    "parse_listen",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108

_MAX_LINE = 8 * 1024  # request line or one header line
_MAX_HEAD = 32 * 1024  # request line plus all headers
_MAX_HEADERS = 64

log = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` -> ``("127.0.0.1", 9108)``; ``"[::1]:9108"`` -> ``("::1", 9108)``.

    An empty host (``":9108"``) means all IPv4 interfaces. ValueError when malformed.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected host:port, got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 host must be in brackets, e.g. [::1]:9108, got {listen!r}")
    return host or "0.0.0.0", int(port_text)


@dataclass(frozen=True)
class Readiness:
    """Whether the daemon is ready to take data, and if not, why (shown by ``/readyz``)."""

    ready: bool
    reason: str = ""


ReadinessCheck = Callable[[], Readiness]
"""Provided by the app: e.g. TStorage connected or spool accepting, and all sources running."""


def _always_ready() -> Readiness:
    return Readiness(True)


class _BadRequest(Exception):
    """The request head is malformed or too large; answered with the given status."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status


@dataclass
class _Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()


def _json(status: HTTPStatus, payload: object) -> _Response:
    body = json.dumps(payload, separators=(",", ":"), default=str).encode() + b"\n"
    return _Response(status, body, "application/json")


class ObservabilityServer:
    """Serves metrics, health, readiness and status of one daemon.

    Use as an async context manager, or call :meth:`start` and :meth:`stop`. ``port=0``
    picks a free port (tests); :attr:`port` tells which one was bound. ``readiness`` backs
    ``/readyz``; ``read_timeout`` bounds both reading a request head and handing over the
    answer, so a stalled client cannot hold a connection open.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        readiness: ReadinessCheck = _always_ready,
        read_timeout: float = 5.0,
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self.readiness = readiness
        self.read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL of the endpoint, e.g. ``http://127.0.0.1:9108``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raises OSError when the address is taken."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self.requested_port, limit=_MAX_LINE
        )

    async def stop(self) -> None:
        """Stop listening and finish (or cancel) the requests in flight."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> ObservabilityServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except Exception:
            log.exception("metrics_request_failed")
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            async with asyncio.timeout(self.read_timeout):
                method, target, headers = await _read_head(reader)
            response = self._route(method, target, headers)
        except TimeoutError:
            response = _Response(HTTPStatus.REQUEST_TIMEOUT, b"request timeout\n")
        except _BadRequest as bad:
            response = _Response(bad.status, f"{bad}\n".encode())
        except Exception:
            log.exception("metrics_response_failed")
            response = _Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n")
        writer.write(_encode(response, head_only=method == "HEAD"))
        # A client that does not read its answer must not hold the handler forever either.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.read_timeout):
                await writer.drain()

    def _route(self, method: str, target: str, headers: dict[str, str]) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"only GET and HEAD\n",
                extra_headers=(("Allow", "GET, HEAD"),),
            )
        path = target.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return _Response(HTTPStatus.OK, encoder(self.metrics.registry), content_type)
        if path == "/healthz":
            # Answering at all proves the event loop runs.
            return _Response(HTTPStatus.OK, b"ok\n")
        if path == "/readyz":
            state = self.readiness()
            status = HTTPStatus.OK if state.ready else HTTPStatus.SERVICE_UNAVAILABLE
            return _json(status, {"ready": state.ready, "reason": state.reason})
        if path == "/status":
            return _json(HTTPStatus.OK, self.status())
        return _Response(HTTPStatus.NOT_FOUND, b"not found\n")

    def status(self) -> dict[str, Any]:
        """The ``/status`` document: the metrics snapshot plus readiness."""
        snapshot = self.metrics.snapshot()
        state = self.readiness()
        snapshot["ready"] = {"ready": state.ready, "reason": state.reason}
        return snapshot


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """Read and parse the request line and headers; the body (if any) is ignored."""
    request_line = await _read_line(reader)
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, _version = parts
    if not method.isalpha() or not target.startswith("/"):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    headers: dict[str, str] = {}
    total = len(request_line)
    while True:
        line = await _read_line(reader)
        if not line:
            return method, target, headers
        total += len(line)
        if total > _MAX_HEAD or len(headers) >= _MAX_HEADERS:
            raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers[name.lower()] = value.strip()


async def _read_line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request line too long"
        ) from None
    except asyncio.IncompleteReadError as eof:
        if eof.partial:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "incomplete request") from None
        raise
    try:
        return raw.rstrip(b"\r\n").decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "non-ASCII request head") from None


def _encode(response: _Response, *, head_only: bool) -> bytes:
    headers = [
        f"HTTP/1.1 {response.status.value} {response.status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in response.extra_headers),
    ]
    head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
