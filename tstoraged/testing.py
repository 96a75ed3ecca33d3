"""Helpers for testing tstoraged and its plugins.

A source plugin's unit tests drive the source with :class:`RecordingContext`: the daemon's
own source context (compiled mapping, dead-lettering, checkpoint handling) with the pipeline
replaced by lists::

    context = RecordingContext(MyConfig(type="mine", name="test", ...), tmp_path)
    await MySource(context.config, context).read_once()
    (records,) = context.emitted

Whole-daemon tests run the real process::

    with NotifySocket(tmp_path) as notify, DaemonProcess(config_path, notify=notify) as daemon:
        notify.wait_for("READY=1")
        status = daemon.status()          # GET /status of the daemon's metrics endpoint
        daemon.send_signal(signal.SIGHUP)
        assert daemon.terminate() == 0

The daemon is started as ``python -m tstoraged.cli run -c <config>`` with JSON logs on stdout;
configs used with it should set ``[metrics] listen = "127.0.0.1:0"`` (the bound address is
read from the ``daemon_started`` log line).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tstorage_client.record import Record
from tstoraged.mapping.codecs import CodecType
from tstoraged.mapping.compile import compile_mapping
from tstoraged.observe.metrics import Metrics
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.observer import NullObserver
from tstoraged.pipeline.spooled import CheckpointedAck
from tstoraged.runtime.context import CoreSourceContext, source_state_dir
from tstoraged.source import Ack, SourceConfig

__all__ = ["DaemonProcess", "NotifySocket", "RecordingContext", "Rejected", "wait_until"]


class Rejected(NamedTuple):
    """One input a source (or its mapping) refused."""

    raw: object
    reason: str
    origin: str


class RecordingContext(CoreSourceContext):
    """The daemon's source context with the pipeline replaced by lists, for plugin tests.

    ``map``, ``map_many`` and ``reject`` are the core's own (the real compiled mapping; refused
    input is also written to ``<state_dir>/dead-letter.jsonl``). What the source emits is kept
    in :attr:`emitted` (one list per ``emit``), its rejects in :attr:`rejected`, the positions
    given with ``emit(..., checkpoint=...)`` in :attr:`checkpoints`. Acks fire at once unless
    ``auto_ack=False``; then :meth:`ack_through` fires them, in order, when the test says so.
    ``durable`` is what :meth:`durable_checkpoints` answers (as a spool would after a crash).
    ``codecs`` defaults to the built-in ones, found through their entry point.

    What the source reports is kept too: :attr:`problem` and :attr:`details` (the latest
    ``set_problem`` / ``set_details``), and its own metrics in a real registry, read with
    :meth:`metric_value`.
    """

    def __init__(
        self,
        config: SourceConfig,
        state_dir: str | os.PathLike[str],
        *,
        codecs: Mapping[str, CodecType[Any]] | None = None,
        auto_ack: bool = True,
        durable: Mapping[str, Any] | None = None,
    ) -> None:
        if codecs is None:
            from tstoraged.plugins import PluginManager

            codecs = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs"}).codecs
        root = Path(state_dir)
        self.config = config
        self.auto_ack = auto_ack
        self.emitted: list[list[Record[bytes]]] = []
        self.acks: list[Ack | None] = []
        self.acked = 0
        """Number of emits acknowledged so far."""
        self.rejected: list[Rejected] = []
        self.origins: list[str] = []
        """The origins given to :meth:`map`, in call order."""
        self.checkpoints: dict[str, Any] = {}
        self.reports = Metrics(process_metrics=False)
        """The daemon's own metrics object, receiving this context's reports."""
        super().__init__(
            config.name,
            mapping=compile_mapping(config, codecs),
            emit=self._record,
            dead_letters=DeadLetterFile(root / "dead-letter.jsonl"),
            observer=NullObserver(),
            state_dir=source_state_dir(root, config.name),
            durable_checkpoints=durable,
            reporter=self.reports,
        )

    @property
    def problem(self) -> str | None:
        """The problem the source reports now (``set_problem``), or None."""
        return self.reports.source_problems().get(self.name)

    @property
    def details(self) -> dict[str, Any]:
        """The details the source published last (``set_details``)."""
        details: dict[str, Any] = (
            self.reports.snapshot()["sources"].get(self.name, {}).get("details", {})
        )
        return details

    def metric_value(self, name: str, **labels: str) -> float | None:
        """The value of the source's own series ``tstoraged_<name>``, or None if it does not exist.

        A counter's series is named with ``_total``: ``metric_value("mqtt_messages_total")``.
        """
        return self.reports.registry.get_sample_value(
            f"tstoraged_{name}", {"source": self.name, **labels}
        )

    @property
    def records(self) -> list[Record[bytes]]:
        """Every record emitted, in order."""
        return [record for records in self.emitted for record in records]

    def map(
        self,
        fields: Mapping[str, Any],
        *,
        origin: str,
        raw: object = None,
        received_ns: int | None = None,
    ) -> Record[bytes] | None:
        self.origins.append(origin)
        return super().map(fields, origin=origin, raw=raw, received_ns=received_ns)

    def _dead_letter(self, raw: object, reason: str, origin: str, label: str) -> None:
        # Both the source's own rejects and the mapping's failures end here.
        self.rejected.append(Rejected(raw, reason, origin))
        super()._dead_letter(raw, reason, origin, label)

    async def _record(self, records: Sequence[Record[bytes]], ack: Ack | None) -> None:
        self.emitted.append(list(records))
        self.acks.append(ack)
        if isinstance(ack, CheckpointedAck):
            self.checkpoints.update(ack.checkpoint)
        if self.auto_ack:
            self.ack_through(len(self.acks))

    def ack_through(self, count: int) -> None:
        """Fire the acks of the first ``count`` emits (those not fired yet), in order."""
        while self.acked < min(count, len(self.acks)):
            ack = self.acks[self.acked]
            self.acked += 1
            if ack is not None:
                ack()


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (bounded deadline); return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class NotifySocket:
    """A real ``NOTIFY_SOCKET``: an AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / "notify.sock"
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(os.fspath(self.path))
        self._sock.settimeout(0.05)
        self._closed = False
        self._thread = threading.Thread(target=self._pump, name="notify-socket", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode("utf-8", "replace"))

    def assignments(self) -> list[str]:
        """Every ``KEY=value`` line received so far, in order."""
        return [line for message in list(self.messages) for line in message.split("\n")]

    def wait_for(self, assignment: str, timeout: float = 30.0, after: int = 0) -> int:
        """Wait for a line starting with ``assignment`` at index >= ``after``; return its index."""

        def find() -> int | None:
            for index, line in enumerate(self.assignments()):
                if index >= after and line.startswith(assignment):
                    return index + 1  # +1 so that index 0 is truthy
            return None

        return int(wait_until(find, timeout, f"sd_notify {assignment!r}")) - 1

    def close(self) -> None:
        """Stop listening and remove the socket file."""
        self._closed = True
        self._thread.join(1)
        self._sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaemonProcess:
    """``tstoraged run`` as a child process with its JSON log lines collected."""

    def __init__(
        self,
        config: str | os.PathLike[str],
        *,
        notify: NotifySocket | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """``prefix`` runs the daemon through another command (e.g. ``setpriv ...``)."""
        self.config = Path(config)
        self.prefix = list(prefix or [])
        self.notify = notify
        self.env = dict(env or {})
        self.args = list(args or [])
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> DaemonProcess:
        """Start the daemon (returns at once; wait for READY=1 or a log event)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("NOTIFY_SOCKET", None)
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = os.fspath(self.notify.path)
        self.lines = []
        command = [sys.executable, "-m", "tstoraged.cli", "run", "-c", os.fspath(self.config)]
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
            [*self.prefix, *command, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        process = self.process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.lines.append(line.rstrip("\n"))

        self._reader = threading.Thread(target=pump, name="tstoraged-output", daemon=True)
        self._reader.start()
        return self

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Parsed JSON log events (optionally only those named ``name``)."""
        out = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_for_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first log event named ``name`` (waits for it)."""
        return self.wait_for_events(name, 1, timeout)[0]

    def wait_for_events(self, name: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The first ``count`` log events named ``name`` (waits until that many were logged).

        The log and the sd_notify socket are separate channels: after ``READY=1`` the log
        line of what led to it may not have been read yet, so wait for the event itself.
        """

        def find() -> list[dict[str, Any]] | None:
            process = self.process
            exited = process is not None and process.poll() is not None
            events = self.events(name)
            if len(events) >= count:
                return events[:count]
            if exited and process is not None:
                raise RuntimeError(
                    f"tstoraged exited ({process.returncode}) after {len(events)} of "
                    f"{count} {name!r} events:\n" + "\n".join(self.lines)
                )
            return None

        result: list[dict[str, Any]] = wait_until(find, timeout, f"{count} log event(s) {name!r}")
        return result

    @property
    def url(self) -> str:
        """Base URL of the metrics/status endpoint (from the ``daemon_started`` event)."""
        return str(self.wait_for_event("daemon_started")["metrics"])

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        """GET ``path`` from the daemon's endpoint; returns (status code, body)."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def status(self) -> dict[str, Any]:
        """The daemon's ``/status`` document."""
        code, body = self.get("/status")
        if code != 200:
            raise RuntimeError(f"/status answered {code}: {body}")
        result: dict[str, Any] = json.loads(body)
        return result

    def source_status(self, name: str) -> dict[str, Any]:
        """One source's entry of ``/status`` (empty until it reported anything)."""
        sources: dict[str, dict[str, Any]] = self.status().get("sources", {})
        return sources.get(name, {})

    def send_signal(self, signum: int) -> None:
        """Send a signal (SIGHUP to reload)."""
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the exit; returns the exit code."""
        assert self.process is not None
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.wait()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
