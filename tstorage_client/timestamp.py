"""Time conversions between Unix time and TStorage time.

TStorage time counts nanoseconds since 2001-01-01T00:00:00Z; ``unix_ns = tstorage_ns + OFFSET_NS``.
Functions named ``*_ns`` work in integer nanoseconds (exact); the others in seconds
(``int | float``).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

__all__ = [
    "OFFSET_NS",
    "OFFSET_S",
    "Tstoragedatetime",
    "from_unix",
    "from_unix_ns",
    "now",
    "now_ns",
    "to_unix",
    "to_unix_ns",
]

OFFSET_S = 978_307_200
"""Seconds from the Unix epoch to the TStorage epoch (2001-01-01T00:00:00Z)."""
OFFSET_NS = OFFSET_S * 1_000_000_000

_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_unix(timestamp: int | float) -> int | float:
    """TStorage seconds -> Unix seconds."""
    return timestamp + OFFSET_S


def to_unix_ns(timestamp: int) -> int:
    """TStorage nanoseconds -> Unix nanoseconds."""
    return timestamp + OFFSET_NS


def from_unix(timestamp: int | float) -> int | float:
    """Unix seconds -> TStorage seconds."""
    return timestamp - OFFSET_S


def from_unix_ns(timestamp: int) -> int:
    """Unix nanoseconds -> TStorage nanoseconds."""
    return timestamp - OFFSET_NS


def now() -> float:
    """The current time in TStorage seconds."""
    return time.time() - OFFSET_S


def now_ns() -> int:
    """The current time in TStorage nanoseconds."""
    return time.time_ns() - OFFSET_NS


def _as_utc(moment: dt.datetime) -> dt.datetime:
    """An aware datetime as UTC; a naive one is local time (as ``datetime.timestamp`` takes it)."""
    return moment.astimezone(dt.UTC)


def _in_zone(moment: dt.datetime, tzinfo: dt.tzinfo | None) -> dt.datetime:
    """An aware UTC datetime in ``tzinfo``; with None, naive local time (as ``fromtimestamp``)."""
    if tzinfo is None:
        return moment.astimezone().replace(tzinfo=None)
    return moment.astimezone(tzinfo)


@dataclass(order=True)
class Tstoragedatetime:
    """A nanosecond-precise instant: a ``datetime`` plus the nanoseconds below its microsecond.

    ``nanoseconds`` may be any integer; it is added to ``datetime`` (so
    ``Tstoragedatetime(d, 1500)`` is 1.5 µs after ``d``). A naive ``datetime`` is local time,
    as for ``datetime.timestamp()``. The ``from_*`` constructors give a ``datetime`` in
    ``tzinfo`` (UTC by default; ``tzinfo=None``: naive local time, as ``fromtimestamp``).
    """

    datetime: dt.datetime
    nanoseconds: int = 0

    def _unix_ns(self) -> int:
        delta = _as_utc(self.datetime) - _UNIX_EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return micros * 1_000 + self.nanoseconds

    @classmethod
    def from_unix_ns(cls, ts: int, *, tzinfo: dt.tzinfo | None = dt.UTC) -> Tstoragedatetime:
        """From Unix nanoseconds."""
        micros, nanos = divmod(ts, 1_000)
        return cls(_in_zone(_UNIX_EPOCH + dt.timedelta(microseconds=micros), tzinfo), nanos)

    @classmethod
    def from_unix(cls, ts: int | float, *, tzinfo: dt.tzinfo | None = dt.UTC) -> Tstoragedatetime:
        """From Unix seconds."""
        return cls.from_unix_ns(_seconds_to_ns(ts), tzinfo=tzinfo)

    @classmethod
    def from_tstorage_ns(cls, ts: int, *, tzinfo: dt.tzinfo | None = dt.UTC) -> Tstoragedatetime:
        """From TStorage nanoseconds."""
        return cls.from_unix_ns(ts + OFFSET_NS, tzinfo=tzinfo)

    @classmethod
    def from_tstorage(
        cls, ts: int | float, *, tzinfo: dt.tzinfo | None = dt.UTC
    ) -> Tstoragedatetime:
        """From TStorage seconds."""
        return cls.from_unix_ns(_seconds_to_ns(ts) + OFFSET_NS, tzinfo=tzinfo)

    def to_unix_ns(self) -> int:
        """To Unix nanoseconds."""
        return self._unix_ns()

    def to_unix(self) -> float:
        """To Unix seconds."""
        return self._unix_ns() / 1e9

    def to_tstorage_ns(self) -> int:
        """To TStorage nanoseconds."""
        return self._unix_ns() - OFFSET_NS

    def to_tstorage(self) -> float:
        """To TStorage seconds."""
        return (self._unix_ns() - OFFSET_NS) / 1e9


def _seconds_to_ns(ts: int | float) -> int:
    """Seconds as integer nanoseconds (exact for an int, rounded for a float)."""
    if isinstance(ts, int):
        return ts * 1_000_000_000
    return round(ts * 1_000_000_000)
