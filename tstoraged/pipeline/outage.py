"""Why TStorage cannot be reached, and the few log lines that say so while it lasts.

The writer tells :class:`OutageLog` about every attempt; the log gets edges and a heartbeat
instead of one line per retry:

``tstorage_connected`` (info)
    The first connection to a target (once per target: at start, and after a reload that
    changed it).
``tstorage_outage_started`` (warning)
    An outage begins: ``reason`` (a fixed label, see :data:`REASONS`), ``error`` (the real
    error), ``records_waiting`` and ``retrying_in_s``.
``tstorage_outage_continuing`` (warning)
    Every ``[retry] outage_report_interval`` while it lasts (at the next failed attempt):
    ``outage_s`` so far, ``failed_attempts``, the latest ``reason``/``error``,
    ``records_waiting``.
``tstorage_restored`` (info)
    The outage is over: ``outage_s``, ``failed_attempts``, ``records_waiting`` at that moment.
``tstorage_backlog_delivered`` (info)
    The records that were waiting when it was restored have been delivered: ``records``
    delivered since, ``seconds`` it took.

A connection that had worked and is found closed (TStorage restarted, or closed an idle
connection) is no outage: the retry reconnects and only a debug line is written. If the
reconnect fails too, the outage is counted from that first failure. All these events are
logged with ``rate_limit=False``: they limit themselves, and an edge must never be swallowed
by the log's rate limiter (a second outage within its window would lose its first line).
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = ["REASONS", "Cause", "OutageLog", "connect_failure", "request_failure"]

log = structlog.get_logger("tstoraged.pipeline.writer")

REASONS = ("connection_refused", "timeout", "tls_error", "connection_error", "disconnected")
"""The ``reason`` labels (also those of ``tstoraged_write_retries_total``)."""

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}


@dataclass(frozen=True)
class Cause:
    """Why one attempt failed."""

    reason: str
    """One of :data:`REASONS`."""
    error: str
    """What happened, in words, with the operating system's or TLS library's message."""

    def __str__(self) -> str:
        return f"{self.reason}: {self.error}"


def connect_failure(exc: BaseException, *, connect_timeout: float | None) -> Cause:
    """The cause of a connection (TCP connect or TLS handshake) that could not be made."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or exc
        return Cause("tls_error", f"certificate not accepted: {detail}")
    if isinstance(exc, ssl.SSLError):
        return Cause("tls_error", f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}")
    if isinstance(exc, TimeoutError):
        within = f" within {connect_timeout:g} s" if connect_timeout is not None else ""
        return Cause("timeout", f"no connection{within} (tstorage.connect_timeout)")
    if isinstance(exc, ConnectionRefusedError):
        return Cause("connection_refused", f"connection refused: {exc}")
    if isinstance(exc, socket.gaierror):
        return Cause("connection_error", f"host name not resolved: {exc}")
    if isinstance(exc, ConnectionError):
        return Cause("connection_error", f"connection failed: {exc}")
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return Cause("connection_error", f"unreachable: {exc}")
    return Cause("connection_error", f"{type(exc).__name__}: {exc}")


def request_failure(seconds: float, *, timeout: float) -> Cause:
    """The cause of a request on an open connection that got no answer (DISCONNECTED).

    The client answers DISCONNECTED both for a request that timed out and for a connection
    that ended: a request that took the whole ``timeout`` timed out.
    """
    if seconds >= timeout * 0.95:
        return Cause("timeout", f"no answer within {timeout:g} s (tstorage.timeout)")
    return Cause("disconnected", "the connection was closed before TStorage answered")


class OutageLog:
    """Turns the writer's attempts into the events of the module docstring.

    ``waiting`` counts the records not yet delivered (memory and spool); ``clock`` is
    injectable for tests.
    """

    def __init__(
        self,
        *,
        report_interval: float,
        waiting: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
        logger: Any = log,
    ) -> None:
        self.report_interval = report_interval
        self._waiting = waiting
        self._clock = clock
        self._log = logger
        self._connected_to: set[str] = set()
        self._working = False
        """The last attempt succeeded: the open connection had worked."""
        self._first_failure: float | None = None
        self._failures = 0
        self._outage_logged = False
        self._last_report = 0.0
        self._last_cause: Cause | None = None
        self._backlog: tuple[int, int, float] | None = None
        """Records waiting at the restore, records delivered since, when it was restored."""

    @property
    def outage_s(self) -> float | None:
        """Seconds since the outage began, or None when TStorage is reachable."""
        if not self._outage_logged or self._first_failure is None:
            return None
        return self._clock() - self._first_failure

    @property
    def last_cause(self) -> Cause | None:
        """The cause of the latest failed attempt of the current outage."""
        return self._last_cause if self._outage_logged else None

    def describe(self) -> dict[str, Any] | None:
        """The current outage for ``/status`` (None while TStorage is reachable): since when
        (Unix time), for how long, the latest cause and the failed attempts so far."""
        outage_s, cause = self.outage_s, self.last_cause
        if outage_s is None or cause is None:
            return None
        return {
            "since": round(time.time() - outage_s, 3),
            "outage_s": round(outage_s, 1),
            "reason": cause.reason,
            "error": cause.error,
            "failed_attempts": self._failures,
        }

    def failed(self, target: str, cause: Cause, *, retry_in: float | None) -> None:
        """An attempt to write to ``target`` failed transiently (it will be retried)."""
        now = self._clock()
        if self._first_failure is None:
            self._first_failure = now
        self._failures += 1
        self._last_cause = cause
        working, self._working = self._working, False
        fields: dict[str, Any] = {"target": target, "reason": cause.reason, "error": cause.error}
        if not self._outage_logged:
            if working and cause.reason == "disconnected":
                self._log.debug("tstorage_connection_lost", **fields)
                return
            self._outage_logged = True
            self._last_report = now
            self._log.warning(
                "tstorage_outage_started",
                **fields,
                records_waiting=self._waiting(),
                retrying_in_s=None if retry_in is None else round(retry_in, 3),
                rate_limit=False,
            )
            return
        if now - self._last_report >= self.report_interval:
            self._last_report = now
            self._log.warning(
                "tstorage_outage_continuing",
                **fields,
                outage_s=round(now - self._first_failure, 1),
                failed_attempts=self._failures,
                records_waiting=self._waiting(),
                rate_limit=False,
            )

    def succeeded(self, target: str, *, tls: bool) -> None:
        """TStorage at ``target`` answered a request."""
        now = self._clock()
        self._working = True
        if target not in self._connected_to:
            self._connected_to.add(target)
            self._log.info("tstorage_connected", target=target, tls=tls, rate_limit=False)
        if self._outage_logged and self._first_failure is not None:
            waiting = self._waiting()
            self._log.info(
                "tstorage_restored",
                target=target,
                outage_s=round(now - self._first_failure, 1),
                failed_attempts=self._failures,
                records_waiting=waiting,
                rate_limit=False,
            )
            self._backlog = (waiting, 0, now) if waiting else None
        elif self._failures:
            self._log.debug("tstorage_reconnected", target=target)
        self._first_failure = None
        self._failures = 0
        self._outage_logged = False
        self._last_cause = None

    def delivered(self, records: int) -> None:
        """``records`` were written (or settled): counts toward the backlog after a restore."""
        if self._backlog is None:
            return
        waiting, delivered, since = self._backlog
        delivered += records
        if delivered < waiting:
            self._backlog = (waiting, delivered, since)
            return
        self._backlog = None
        self._log.info(
            "tstorage_backlog_delivered",
            records=delivered,
            seconds=round(self._clock() - since, 1),
            rate_limit=False,
        )
