"""Logging setup for the daemon, after structlog's own advice.

Everything is written to stdout, one line per event, flushed per line: systemd hands stdout to
journald. On a terminal the output is structlog's console renderer; otherwise (journald, a
pipe, a file) it is JSON lines. structlog events and the stdlib records of libraries go through
one shared processor chain (timestamp in ISO UTC, level, logger name, secret redaction) and end
in the same ``ProcessorFormatter``, so a pymodbus warning looks like our own lines.

``configure_logging`` may be called again (config reload) with another level or format.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import Secret, SecretBytes, SecretStr
from structlog.typing import Processor

from tstoraged.config import sensitive
from tstoraged.observe.ratelimit import RateLimiter, RateLimitFilter, RateLimitProcessor

__all__ = [
    "LEVELS",
    "MASK",
    "LogFormat",
    "configure_logging",
    "parse_level",
    "redact_secrets",
    "scrub_rendered",
]

LogFormat = Literal["auto", "json", "console"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

MASK = sensitive.MASK
"""What a secret is rendered as (the same mask pydantic uses)."""

_SECRET_TYPES = (SecretStr, SecretBytes, Secret)


def _sensitive_item(key: object, value: object) -> bool:
    """A plain value under a secret-looking key (``password=...``): a safety net for a secret
    unwrapped with ``get_secret_value()`` and then logged by mistake."""
    return isinstance(value, str | bytes) and value not in ("", b"") and sensitive.looks_secret(key)


# The structlog chain is one list object mutated in place on reconfiguration: loggers bound
# before a reload (e.g. a source's ``log``) keep a reference to it and follow the new setup.
_STRUCTLOG_CHAIN: list[Processor] = []
_HANDLER_MARK = "_tstoraged_handler"


def parse_level(level: str | int) -> int:
    """Turn ``"info"``/``"WARNING"``/``20`` into a stdlib level number; ValueError otherwise."""
    if isinstance(level, int):
        return level
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        expected = ", ".join(name for name in LEVELS if name != "warn")
        raise ValueError(f"unknown log level {level!r}; expected one of {expected}") from None


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: render pydantic secrets, and values of password-like keys, masked.

    Looks into dicts, lists and tuples a few levels deep (a logged config section).
    """
    for key, value in event_dict.items():
        if value is None:
            continue
        if _sensitive_item(key, value):
            event_dict[key] = MASK
            continue
        masked = _mask(value, 3)
        if masked is not value:
            event_dict[key] = masked
    return event_dict


def scrub_rendered(logger: Any, method_name: str, rendered: Any) -> Any:
    """Final processor: every remembered secret value in the rendered line is masked."""
    return sensitive.scrub(rendered) if isinstance(rendered, str) else rendered


def _mask(value: object, depth: int) -> object:
    """Return ``value`` with secrets masked; the same object when nothing needed masking."""
    if isinstance(value, _SECRET_TYPES):
        return MASK
    if depth == 0:
        return value
    if isinstance(value, dict):
        items = {
            k: MASK if _sensitive_item(k, v) else _mask(v, depth - 1) for k, v in value.items()
        }
        changed = any(items[k] is not v for k, v in value.items())
        return items if changed else value
    if isinstance(value, list | tuple):
        masked = [_mask(v, depth - 1) for v in value]
        if any(m is not v for m, v in zip(masked, value, strict=True)):
            return type(value)(masked) if isinstance(value, tuple) else masked
    return value


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed or detached stream
        return False


def _is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM``)."""
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):  # no real file descriptor behind the stream
        return False


class _JournalPriority(logging.Formatter):
    """Prefixes each line with its syslog priority (``<3>``), which journald strips and keeps.

    Then ``journalctl -p warning -u tstoraged`` filters by level, and errors are highlighted.
    """

    _PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4))

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in self._PRIORITIES if record.levelno >= level), None)
        if priority is None:
            priority = 6 if record.levelno >= logging.INFO else 7
        return f"<{priority}>{self.inner.format(record)}"


def _shared_processors() -> list[Processor]:
    """What every line gets, whether it came from structlog or from a library."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def configure_logging(
    level: str | int = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    *,
    rate_limit_window: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Configure structlog and the stdlib root logger; safe to call again on reload.

    ``fmt="auto"`` renders for humans when ``stream`` (default: ``sys.stdout``) is a terminal
    and JSON lines otherwise; the console rendering has colours on a terminal unless
    ``$NO_COLOR`` is set. When the stream is systemd's journal stream, each line starts
    with its syslog priority (``<4>{...}``), which journald turns into the entry's priority.

    Warnings and errors that repeat (same event, level, logger and ``source``/``target``/
    ``reason``/``error`` fields) are let through once per ``rate_limit_window`` seconds; the
    next one carries ``suppressed=N``.
    """
    levelno = parse_level(level)
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    out = sys.stdout if stream is None else stream
    tty = _is_tty(out)
    render_json = fmt == "json" or (fmt == "auto" and not tty)

    limiter = RateLimiter(rate_limit_window, clock=clock)
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if render_json:
        # A traceback as one string field: readable in `journalctl -o cat`, and unlike
        # dict_tracebacks it does not dump local variables (which may hold secrets).
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        # Rich tracebacks, but without local variables: they may hold secrets. Colours only on
        # a terminal, and not when NO_COLOR is set to anything (https://no-color.org).
        final.append(
            structlog.dev.ConsoleRenderer(
                colors=tty and not os.environ.get("NO_COLOR"),
                exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
            )
        )
    # Last: the config's secret values, wherever they ended up in the line (an exception
    # message, a library's own log text), are masked in what is written.
    final.append(scrub_rendered)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_shared_processors(),
            structlog.stdlib.ExtraAdder(allow=["suppressed"]),
        ],
        processors=final,
    )

    handler = logging.StreamHandler(out)  # flushes after every record
    journal = _is_journal(out, os.environ)
    handler.setFormatter(_JournalPriority(formatter) if journal else formatter)
    handler.addFilter(RateLimitFilter(limiter))
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    logging.captureWarnings(True)

    shared = _shared_processors()
    _STRUCTLOG_CHAIN[:] = [
        # Checks the stdlib level at call time, so a reload's new level also applies to
        # loggers that were bound (and cached) before it.
        structlog.stdlib.filter_by_level,
        *shared[:3],
        RateLimitProcessor(limiter),
        *shared[3:],
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ]
    structlog.configure(
        processors=_STRUCTLOG_CHAIN,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
