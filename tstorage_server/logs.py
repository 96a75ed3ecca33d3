"""structlog setup for the server process: one event per line on stdout."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["LogLimiter", "configure_logging"]


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: int = logging.INFO
) -> None:
    """JSON lines when stdout is not a terminal (journald, tests), the console renderer when it is.

    stdlib logging of libraries goes through the same processor chain.
    """
    if fmt == "auto":
        fmt = "console" if sys.stdout.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class LogLimiter:
    """At most ``burst`` events of one name per ``period`` seconds; the rest are counted.

    Per-connection events (open, close, failed request) of a flood of connections would
    otherwise write hundreds of bytes each: the first event after a quiet period carries
    ``suppressed=n`` for what was left out. When no such event follows (the flood simply
    ended), :func:`tstorage_server.connection.log_limited` reports the count when the window
    closes, as ``log_events_suppressed``.
    """

    def __init__(self, burst: int = 20, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._windows: dict[str, tuple[float, int, int]] = {}  # start, logged, suppressed

    def allow(self, name: str, now: float) -> int | None:
        """None: drop this event; else log it, with the returned count of suppressed ones."""
        start, logged, suppressed = self._windows.get(name, (now, 0, 0))
        if now - start >= self.period:
            start, logged = now, 0
        if logged >= self.burst:
            self._windows[name] = (start, logged, suppressed + 1)
            return None
        self._windows[name] = (start, logged + 1, 0)
        return suppressed

    def pending(self, name: str) -> tuple[int, float]:
        """Events of ``name`` suppressed so far in its window, and when that window ends."""
        start, _, suppressed = self._windows.get(name, (0.0, 0, 0))
        return suppressed, start + self.period

    def take(self, name: str) -> int:
        """The suppressed count of ``name``, now reported elsewhere (reset to 0)."""
        start, logged, suppressed = self._windows.get(name, (0.0, 0, 0))
        if suppressed:
            self._windows[name] = (start, logged, 0)
        return suppressed
