"""Capture times: numbers in s/ms/us/ns or ISO 8601 text -> TStorage nanoseconds, exactly.

Numbers are converted without going through binary floating point where that would lose
nanoseconds: integers and numeric text are exact, and a float is taken as the decimal
number it prints as (``1700000000.123`` s is ``...123000000`` ns, not ``...122999907``).
ISO 8601 text keeps up to nine fractional digits; text without a UTC offset is UTC.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from tstorage_client.record import CAP_MAX, CAP_MIN
from tstorage_client.timestamp import OFFSET_NS, Tstoragedatetime
from tstoraged.mapping.errors import MappingError, describe, field_error

__all__ = [
    "CAP_HIGHEST",
    "CAP_LOWEST",
    "UNIT_NS",
    "cap_converter",
    "iso8601_parser",
    "iso8601_to_unix_ns",
    "number_to_ns",
]

UNIT_NS: Final[dict[str, int]] = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
"""Nanoseconds per unit of a numeric capture-time field."""

CAP_LOWEST: Final = CAP_MIN
CAP_HIGHEST: Final = CAP_MAX - 1
"""The largest storable cap: TStorage silently drops records with a key part at its maximum."""

# A decimal fraction of any length after the seconds (hh:mm:ss or basic Thhmmss).
_SECONDS_FRACTION = re.compile(r"(?:(?<=\d\d:\d\d:\d\d)|(?<=[Tt ]\d{6}))[.,](?P<digits>\d+)")
_NS_DIGITS = 9
_LARGEST_EXPONENT = 24
"""Any time of 10**25 units or more is out of range, whatever the unit (ns: 9.2e18 max)."""


def number_to_ns(value: Any, factor: int, field: str) -> int:
    """``value`` (a number or numeric text, in units of ``factor`` ns) as integer nanoseconds."""
    kind = type(value)
    if kind is int:
        return int(value) * factor
    if kind is bool:
        raise field_error(field, value, "is a boolean, not a time")
    if isinstance(value, str | bytes | bytearray):
        number = _decimal_from_text(value, field)
    elif isinstance(value, float):
        # repr() is the shortest text that reads back as this float: the number meant.
        number = Decimal(repr(value))
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    else:
        try:
            number = Decimal(operator.index(value))  # numpy integers and the like
        except TypeError:
            raise field_error(field, value, f"is not a number ({type(value).__name__})") from None
    if not number.is_finite():
        raise field_error(field, value, "is not a finite number")
    if number.adjusted() > _LARGEST_EXPONENT:
        # Refused before scaling: decimal arithmetic on "1e999999" would overflow or crawl.
        raise field_error(field, value, "is out of the range of TStorage times")
    return round(number * factor)


def _decimal_from_text(value: str | bytes | bytearray, field: str) -> Decimal:
    try:
        text = value if isinstance(value, str) else value.decode("ascii")
        return Decimal(text.strip())
    except (InvalidOperation, UnicodeDecodeError):
        raise field_error(field, value, "is not a number") from None


def iso8601_to_unix_ns(value: Any, field: str) -> int:
    """ISO 8601 text (or a ``datetime``) as Unix nanoseconds; naive times are UTC.

    Accepts what :meth:`datetime.datetime.fromisoformat` accepts (``Z`` or ``±hh:mm`` offsets,
    ``T`` or space, basic and extended formats, dates alone) with a seconds fraction of up
    to nine digits kept exactly; digits beyond nanoseconds are dropped.
    """
    if isinstance(value, dt.datetime):
        return Tstoragedatetime(_utc_if_naive(value)).to_unix_ns()
    if isinstance(value, bytes | bytearray):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise field_error(field, value, f"is not ISO 8601 text ({type(value).__name__})")
    text = value.strip()
    nanos = 0
    fraction = _SECONDS_FRACTION.search(text)
    if fraction is not None:
        digits = fraction.group("digits")[:_NS_DIGITS]
        nanos = int(digits.ljust(_NS_DIGITS, "0"))
        text = text[: fraction.start()] + text[fraction.end() :]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise field_error(field, value, "is not an ISO 8601 time") from None
    return Tstoragedatetime(_utc_if_naive(moment), nanos).to_unix_ns()


def _utc_if_naive(moment: dt.datetime) -> dt.datetime:
    # Tstoragedatetime takes a naive time as local time (as datetime.timestamp does).
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


# The shape nearly every export writes: date, time to the second, optional fraction and offset.
_COMMON_ISO8601 = re.compile(
    r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d):(\d\d)(?:[.,](\d{1,9})\d*)?(Z|z|[+-]\d\d:?\d\d)?"
)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
_CACHE_LIMIT = 4096


def iso8601_parser(field: str) -> Callable[[Any], int]:
    """A parser with the result of :func:`iso8601_to_unix_ns`, faster on the common shape.

    Consecutive timestamps share their minute and their offset, so the parser remembers
    what those are in nanoseconds and converts only the seconds and the fraction per value.
    Other shapes go to :func:`iso8601_to_unix_ns`.
    """
    minutes: dict[str, int] = {}
    offsets: dict[str | None, int] = {None: 0, "Z": 0, "z": 0}

    def parse(value: Any) -> int:
        match = _COMMON_ISO8601.fullmatch(value) if type(value) is str else None
        if match is None:
            return iso8601_to_unix_ns(value, field)
        minute, second_text, fraction, zone = match.groups()
        second = int(second_text)
        base = minutes.get(minute)
        offset = offsets.get(zone)
        if base is None or offset is None or second > 59:
            try:
                base = _naive_ns(dt.datetime.fromisoformat(minute))
                offset = _offset_ns(zone)
            except ValueError:
                return iso8601_to_unix_ns(value, field)  # says what is wrong
            if second > 59:
                return iso8601_to_unix_ns(value, field)
            if len(minutes) >= _CACHE_LIMIT:
                minutes.clear()  # times move on; old minutes are not needed again
            minutes[minute] = base
            offsets[zone] = offset
        unix_ns = base + second * 1_000_000_000 - offset
        if fraction:
            unix_ns += int(fraction) * 10 ** (_NS_DIGITS - len(fraction))
        return unix_ns

    return parse


def _naive_ns(moment: dt.datetime) -> int:
    return (moment - _NAIVE_EPOCH) // _MICROSECOND * 1_000


def _offset_ns(zone: str | None) -> int:
    if zone is None:
        return 0
    offset = dt.datetime.fromisoformat("2001-01-01T00:00:00" + zone).utcoffset()
    assert offset is not None
    return offset // _MICROSECOND * 1_000


def cap_converter(unit: str, epoch: str, field: str) -> Callable[[Any], int]:
    """The exact converter of one field's values to a storable cap (TStorage ns).

    Raises :class:`MappingError` for a value that is not a time or lies outside the
    storable range.
    """
    if unit == "iso8601":
        parse_iso8601 = iso8601_parser(field)

        def parse(value: Any) -> int:
            return parse_iso8601(value) - OFFSET_NS

    else:
        factor = UNIT_NS[unit]
        offset = OFFSET_NS if epoch == "unix" else 0

        def parse(value: Any) -> int:
            return number_to_ns(value, factor, field) - offset

    def convert(value: Any) -> int:
        cap = parse(value)
        if not CAP_LOWEST <= cap <= CAP_HIGHEST:
            raise MappingError(
                f"field {field!r}: {describe(value)} is out of the range of TStorage times"
            )
        return cap

    return convert
