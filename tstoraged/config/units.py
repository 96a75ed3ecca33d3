"""Human units in config files: durations (``"500ms"``, ``"5m"``) and byte sizes (``"4MiB"``).

Both are reusable annotated types: a model field typed :data:`Duration` holds float seconds,
one typed :data:`ByteSize` holds an int number of bytes. Plain numbers are accepted (seconds,
bytes). When dumped in JSON mode (``tstoraged check``) they are written back in human units.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "ByteSize",
    "Duration",
    "format_byte_size",
    "format_duration",
    "parse_byte_size",
    "parse_duration",
]

_DURATION_UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# One or more number+unit parts, e.g. "1h30m" or "1.5s"; the unit alternation lists "ms"
# before "m" so that "500ms" is not read as 500 minutes followed by garbage.
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|ms|s|m|h|d)")
_DURATION_FULL = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ns|us|ms|s|m|h|d)\s*)+")

_BYTE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BYTE_UNIT_NAMES = "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB; case does not matter"
_BYTE_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")

DURATION_EXPECTED = "a duration like '500ms', '30s', '5m', '1h' or a number of seconds"
BYTE_SIZE_EXPECTED = "a size like '512KiB', '4MiB', '1GB' or a number of bytes"


def parse_duration(value: Any) -> float:
    """Parse a duration into float seconds; raise ValueError naming what is expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_EXPECTED}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION_FULL.fullmatch(text):
                raise ValueError(f"expected {DURATION_EXPECTED}") from None
            seconds = sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
    else:
        raise ValueError(f"expected {DURATION_EXPECTED}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative finite duration ({DURATION_EXPECTED})")
    return seconds


def parse_byte_size(value: Any) -> int:
    """Parse a byte size into an int; raise ValueError naming what is expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected {BYTE_SIZE_EXPECTED}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str):
        match = _BYTE_SIZE.fullmatch(value.strip().lower())
        if match is None or match.group(2) not in ("", *_BYTE_UNITS):
            raise ValueError(f"expected {BYTE_SIZE_EXPECTED} (units: {_BYTE_UNIT_NAMES})")
        number, unit = match.groups()
        exact = float(number) * _BYTE_UNITS.get(unit, 1)
        if not exact.is_integer():
            raise ValueError(f"expected a whole number of bytes, got {exact}")
        size = int(exact)
    else:
        raise ValueError(f"expected {BYTE_SIZE_EXPECTED}")
    if size < 0:
        raise ValueError(f"expected a non-negative size ({BYTE_SIZE_EXPECTED})")
    return size


def format_duration(seconds: float) -> str:
    """Write seconds in the largest unit that represents them exactly (``90.0 -> "90s"``)."""
    for unit in ("d", "h", "m", "s", "ms", "us"):
        count = seconds / _DURATION_UNITS[unit]
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    if seconds == 0:
        return "0s"
    return f"{seconds:g}s"


def format_byte_size(size: int) -> str:
    """Write a size in the largest binary unit that divides it (``4194304 -> "4MiB"``)."""
    for unit in ("tib", "gib", "mib", "kib"):
        factor = _BYTE_UNITS[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit[0].upper()}iB"
    return str(size)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Float seconds; accepts ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, or a number of seconds."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    PlainSerializer(format_byte_size, return_type=str, when_used="json"),
]
"""Int bytes; accepts ``"512KiB"``, ``"4MiB"``, ``"1GB"`` (decimal), or a number of bytes."""
