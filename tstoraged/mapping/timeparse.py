"""Capture times: numbers in s/ms/us/ns or ISO 8601 text -> TStorage nanoseconds, exactly.

Numbers are converted without going through binary floating point where that would lose
nanoseconds: integers and numeric text are exact, and a float is taken as the decimal
number it prints as (``1700000000.123`` s is ``...123000000`` ns, not ``...122999907``).
ISO 8601 text keeps up to nine fractional digits; text without a UTC offset is UTC.
"""

from __future__ import annotations

import datetime as dt
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
        raise field_error(field, value, f"is not a number ({type(value).__name__})")
    if not number.is_finite():
        raise field_error(field, value, "is not a finite number")
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
        return Tstoragedatetime(value).to_unix_ns()
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
    return Tstoragedatetime(moment, nanos).to_unix_ns()


def cap_converter(unit: str, epoch: str, field: str) -> Callable[[Any], int]:
    """The exact converter of one field's values to a storable cap (TStorage ns).

    Raises :class:`MappingError` for a value that is not a time or lies outside the
    storable range.
    """
    if unit == "iso8601":

        def parse(value: Any) -> int:
            return iso8601_to_unix_ns(value, field) - OFFSET_NS

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
