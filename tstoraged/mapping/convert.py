"""Field value conversions with precise errors: text or native values to int, float, bool.

Sources hand over whatever their input holds: CSV gives text, JSON gives numbers, booleans
and text, the generator gives Python numbers. These functions accept all the sensible
spellings and raise :class:`MappingError` naming the field otherwise. They are the *exact*
path; compiled mappings try a cheaper inline conversion first and fall back to these.
"""

from __future__ import annotations

import math
import operator
from decimal import Decimal, InvalidOperation
from typing import Any

from tstoraged.mapping.errors import MappingError, describe, field_error

__all__ = ["BOOL_SPELLINGS", "to_bool", "to_float", "to_int"]

_LARGEST_EXPONENT = 40
"""Integer text beyond 10**40 is refused as too large: no key part or struct code holds it."""

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

BOOL_SPELLINGS: dict[Any, bool] = {
    **{text: True for word in _TRUE for text in (word, word.upper(), word.title())},
    **{text: False for word in _FALSE for text in (word, word.upper(), word.title())},
    True: True,  # also matches 1 and 1.0, which hash and compare equal to True
    False: False,  # also matches 0 and 0.0
}
"""Exact-match table of accepted boolean values (the common spellings of each word)."""


def to_int(value: Any, field: str, *, allow_bool: bool = False) -> int:
    """An integer from an int, an integral float or Decimal, or integer text (``" 42"``, ``"4.0"``).

    Booleans are refused unless ``allow_bool`` (a payload integer may be a flag; a key
    part that is a boolean is almost certainly the wrong field).
    """
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is bool:
        if allow_bool:
            return int(value)
        raise field_error(field, value, "is a boolean, not an integer")
    if isinstance(value, str | bytes | bytearray):
        return _int_from_text(value, field)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise field_error(field, value, "is not an integer")
        return int(value)
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise field_error(field, value, "is not an integer")
        return int(value)
    try:
        return operator.index(value)  # numpy integers and other exact integer types
    except TypeError:
        raise field_error(field, value, "is not an integer") from None


def _int_from_text(value: str | bytes | bytearray, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    # Exports often write integers as "4.0" or "4e3"; accept them when exactly integral.
    try:
        text = value if isinstance(value, str) else value.decode("ascii")
        number = Decimal(text.strip())
    except (InvalidOperation, UnicodeDecodeError):
        raise field_error(field, value, "is not an integer") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise field_error(field, value, "is not an integer")
    if number.adjusted() > _LARGEST_EXPONENT:
        # Refused before int(): "1e999999" would build a million-digit integer.
        raise field_error(field, value, "is too large")
    return int(number)


def to_float(value: Any, field: str) -> float:
    """A float from a number (booleans count as 0/1) or numeric text (``"12.5"``, ``"1e3"``)."""
    if isinstance(value, str | bytes | bytearray):
        try:
            return float(value)
        except ValueError:
            raise field_error(field, value, "is not a number") from None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise field_error(field, value, "is not a number") from None
    except OverflowError:
        raise field_error(field, value, "is too large for a float") from None


def to_bool(value: Any, field: str) -> bool:
    """A bool from True/False, 1/0, or text true/false, yes/no, on/off, 1/0 (any case)."""
    try:
        return BOOL_SPELLINGS[value]
    except (KeyError, TypeError):
        pass
    if isinstance(value, bytes | bytearray):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        found = BOOL_SPELLINGS.get(value.strip().lower())
        if found is not None:
            return found
    raise MappingError(
        f"field {field!r}: {describe(value)} is not a boolean (true/false, yes/no, on/off, 1/0)"
    )
