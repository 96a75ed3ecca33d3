"""Run a tstorage-server for tests: in-process (thread or event loop) or as a subprocess.

with serve() as server:                      # memory, 127.0.0.1, a free port
    channel = Channel(server.host, server.port)

async with serve_async(data_dir=tmp_path) as server:   # inside a running event loop
    ...

with ServerProcess(data_dir=tmp_path) as proc:          # a real process: SIGKILL, restart
    proc.kill()
    proc.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tstorage_server.__main__ import LISTENING_PREFIX
from tstorage_server.options import ServerOptions
from tstorage_server.server import TStorageServer

__all__ = ["RunningServer", "ServerProcess", "TlsFiles", "serve", "serve_async"]

TlsFiles = tuple[str | os.PathLike[str], str | os.PathLike[str]]
"""(certificate chain PEM path, private key PEM path)."""


def _options(
    memory: bool,
    data_dir: str | os.PathLike[str] | None,
    tls: ssl.SSLContext | TlsFiles | None,
    extra: dict[str, Any],
) -> ServerOptions:
    if not memory and data_dir is None:
        raise ValueError("serve(memory=False) needs a data_dir")
    context: ssl.SSLContext | None
    if isinstance(tls, tuple):
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.fspath(tls[0]), os.fspath(tls[1]))
    else:
        context = tls
    return replace(
        ServerOptions(port=0),
        data_dir=None if data_dir is None else os.fspath(data_dir),
        ssl_context=context,
        **extra,
    )


@dataclass
class RunningServer:
    """A server started by :func:`serve` / :func:`serve_async`."""

    host: str
    port: int
    server: TStorageServer
    _stop: Any = field(repr=False)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port)."""
        return self.host, self.port

    def stop(self) -> None:
        """Stop the server (blocking; idempotent). Only for :func:`serve`'s thread server."""
        self._stop()


@contextlib.asynccontextmanager
async def serve_async(
    memory: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    tls: ssl.SSLContext | TlsFiles | None = None,
    **options: Any,
) -> AsyncIterator[RunningServer]:
    """Run a server on 127.0.0.1, port 0, in the current event loop.

    ``data_dir`` selects SQLite storage (``memory`` is then ignored); ``tls`` is a server
    ``SSLContext`` or a (cert, key) pair of PEM files; other keywords are
    :class:`~tstorage_server.options.ServerOptions` fields (``idle_timeout``, ...).
    """
    server = await TStorageServer.start(_options(memory, data_dir, tls, options))

    def refuse_sync_stop() -> None:
        raise RuntimeError("a serve_async() server stops when its context exits")

    try:
        yield RunningServer(server.host, server.port, server, refuse_sync_stop)
    finally:
        await server.stop()


@contextlib.contextmanager
def serve(
    memory: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    tls: ssl.SSLContext | TlsFiles | None = None,
    **options: Any,
) -> Iterator[RunningServer]:
    """Run a server on 127.0.0.1, port 0, in a background thread with its own event loop.

    Same arguments as :func:`serve_async`. Usable from synchronous and asynchronous tests
    alike (the server does not share the test's event loop).
    """
    server_options = _options(memory, data_dir, tls, options)
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        try:
            server = await TStorageServer.start(server_options)
        except BaseException as error:
            state["error"] = error
            started.set()
            return
        stop = asyncio.Event()
        state.update(server=server, loop=asyncio.get_running_loop(), stop=stop)
        started.set()
        await server.serve_until(stop)

    thread = threading.Thread(
        target=asyncio.run, args=(main(),), name="tstorage-server", daemon=True
    )
    thread.start()
    started.wait()
    if "error" in state:
        thread.join()
        raise state["error"]

    def stop() -> None:
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # loop already closed
                state["loop"].call_soon_threadsafe(state["stop"].set)
            thread.join()

    server: TStorageServer = state["server"]
    try:
        yield RunningServer(server.host, server.port, server, stop)
    finally:
        stop()


_PORTS_LOW, _PORTS_HIGH = 20000, 32000
"""Ports :class:`ServerProcess` takes: below Linux's ephemeral range (32768-60999), which
``bind(port=0)`` and outgoing connections use."""
_PORTS_PER_WORKER = 2000
_next_port: int | None = None
_ports_lock = threading.Lock()


def _fresh_port(host: str) -> int:
    """A free port this process has not handed out before, outside the ephemeral range.

    A server process that tests kill and restart keeps its port, and clients (a daemon under
    test) keep reconnecting to it meanwhile. Were it a port from ``bind(0)``, the kernel could
    give it to another test's server during the outage, and the reconnecting client would
    deliver into that one. So these ports come from their own range, each at most once per
    process, with disjoint sub-ranges for pytest-xdist workers.
    """
    global _next_port
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    low = _PORTS_LOW + (index * _PORTS_PER_WORKER) % (_PORTS_HIGH - _PORTS_LOW)
    with _ports_lock:
        if _next_port is None:
            _next_port = low + random.randrange(_PORTS_PER_WORKER)
        for _ in range(_PORTS_PER_WORKER):
            port = _next_port
            _next_port = low + (port - low + 1) % _PORTS_PER_WORKER
            with socket.socket() as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {low}..{low + _PORTS_PER_WORKER - 1}")


class ServerProcess:
    """``tstorage-server`` as a child process, for kill / restart / signal tests.

    :meth:`start` launches it on a fresh port that no other server of this process has had
    (or on the port of the previous run, so clients can reconnect after a restart) and waits
    for its "listening" line.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        tls: TlsFiles | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.tls = tls
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        """Lines the process printed to stdout (JSON log events and the listening line)."""
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        """The command line of the next :meth:`start`."""
        args = [
            sys.executable,
            "-m",
            "tstorage_server",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        args += ["--memory"] if self.data_dir is None else ["--data", os.fspath(self.data_dir)]
        if self.tls is not None:
            args += ["--tls-cert", os.fspath(self.tls[0]), "--tls-key", os.fspath(self.tls[1])]
        return [*args, "--log-format", "json", *self.extra_args]

    def start(self) -> ServerProcess:
        """Start the process and wait until it listens; ``.port`` is then the bound port."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the server process is already running")
        if self.port == 0:
            self.port = _fresh_port(self.host)
        self.output = []
        listening = threading.Event()
        bound: list[int] = []
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.process = process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line.rstrip("\n"))
                if line.startswith(LISTENING_PREFIX):
                    address = line[len(LISTENING_PREFIX) :].strip()
                    bound.append(int(address.rsplit(":", 1)[1]))
                    listening.set()
            listening.set()  # the process ended: wake start() to report it

        self._reader = threading.Thread(target=pump, name="tstorage-server-output", daemon=True)
        self._reader.start()
        if not listening.wait(self.start_timeout) or not bound:
            self.kill()
            raise RuntimeError("tstorage-server did not start:\n" + "\n".join(self.output))
        self.port = bound[0]
        return self

    def _wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: the process dies at once, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self._wait(30)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit; returns the exit code."""
        return self.send_signal(signal.SIGTERM, timeout)

    def send_signal(self, signum: int, timeout: float = 30.0) -> int:
        """Send ``signum`` and wait for the exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self._wait(timeout)

    def wait_for_output(self, text: str, timeout: float = 30.0) -> str:
        """The first output line containing ``text`` (polls with a bounded deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.output):
                if text in line:
                    return line
            time.sleep(0.02)
        raise TimeoutError(f"no output line containing {text!r}:\n" + "\n".join(self.output))

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
