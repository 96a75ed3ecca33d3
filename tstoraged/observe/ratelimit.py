"""Rate limiting of repeated log lines.

A source whose device is unplugged fails the same way every poll; a broken uplink fails every
retry. Logging each repetition would flood the journal and hide everything else, so identical
warnings and errors are let through once per window and counted otherwise; the next line let
through for that key carries ``suppressed=N``.

Two adapters share one :class:`RateLimiter`: a structlog processor for our own events and a
``logging.Filter`` for the stdlib records of libraries (pymodbus, paho, asyncio).

An event that an operator caused and must always see (a refused reload) is logged with
``rate_limit=False``: it is never suppressed, and the field itself is not written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, MutableMapping, Sequence
from typing import Any

import structlog

__all__ = [
    "DEFAULT_KEY_FIELDS",
    "EXEMPT_FIELD",
    "RateLimitFilter",
    "RateLimitProcessor",
    "RateLimiter",
]

DEFAULT_KEY_FIELDS: tuple[str, ...] = ("source", "target", "reason", "error")
"""Event fields that make two events "the same" besides the event text and level.

Fields like attempt numbers or counts deliberately do not: they differ on every repetition.
"""

EXEMPT_FIELD = "rate_limit"
"""An event with ``rate_limit=False`` is never suppressed (the field is removed)."""

_LIMITED_LEVELS = frozenset({"warning", "warn", "error", "exception", "critical", "fatal"})


class RateLimiter:
    """Lets one event per key through per ``window`` seconds and counts the rest.

    The clock is injectable so tests are deterministic. The number of tracked keys is bounded
    (``max_keys``): when exceeded, keys whose window has passed are forgotten first.
    """

    def __init__(
        self,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        if window < 0:
            raise ValueError("window must be >= 0")
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        # key -> [start of current window, repetitions suppressed in it]
        self._seen: dict[Hashable, list[float]] = {}

    def admit(self, key: Hashable) -> int | None:
        """Decide about one occurrence of ``key``.

        Returns None when the occurrence is to be suppressed, otherwise the number of
        occurrences suppressed since the key was last let through (0 for a fresh key).
        """
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return None
        suppressed = int(entry[1]) if entry is not None else 0
        self._seen[key] = [now, 0]
        if len(self._seen) > self._max_keys:
            self._forget_old(now)
        return suppressed

    def _forget_old(self, now: float) -> None:
        expired = [k for k, (start, _) in self._seen.items() if now - start >= self.window]
        for key in expired:
            del self._seen[key]
        # Still too many distinct keys inside one window: drop the oldest half (dicts keep
        # insertion order) rather than grow without bound.
        if len(self._seen) > self._max_keys:
            for key in list(self._seen)[: len(self._seen) // 2]:
                del self._seen[key]


class RateLimitProcessor:
    """structlog processor: drops repeats of warnings/errors, annotates ``suppressed=N``.

    The level is the event's ``level`` field when present, else the logger method's name.
    """

    def __init__(self, limiter: RateLimiter, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS):
        self.limiter = limiter
        self.key_fields = tuple(key_fields)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Process one event (structlog's processor signature)."""
        level = event_dict.get("level", method_name)
        if event_dict.pop(EXEMPT_FIELD, True) is False or level not in _LIMITED_LEVELS:
            return event_dict
        key = (
            level,
            getattr(logger, "name", None),
            str(event_dict.get("event")),
            *(_hashable(event_dict.get(field)) for field in self.key_fields),
        )
        suppressed = self.limiter.admit(key)
        if suppressed is None:
            raise structlog.DropEvent
        if suppressed:
            event_dict["suppressed"] = suppressed
        return event_dict


class RateLimitFilter(logging.Filter):
    """stdlib filter for library records (warning and above) with the same semantics.

    Records coming from structlog (their ``msg`` is the event dict) are passed untouched:
    :class:`RateLimitProcessor` has already judged them.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False to drop a repeated record; set ``record.suppressed`` on the next one."""
        if record.levelno < logging.WARNING or isinstance(record.msg, dict):
            return True
        # The unformatted message template is the identity: "%s timed out" repeats even when
        # the arguments differ slightly (addresses, counters).
        suppressed = self.limiter.admit(("stdlib", record.name, record.levelno, str(record.msg)))
        if suppressed is None:
            return False
        if suppressed:
            record.suppressed = suppressed
        return True


def _hashable(value: object) -> Hashable:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
