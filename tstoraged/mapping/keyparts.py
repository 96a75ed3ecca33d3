"""Key parts (cid, mid, moid): from a constant, a field, or a field through a lookup table.

Each configured part compiles to a :class:`CompiledKeyPart`: what the code generator of
:mod:`tstoraged.mapping.compile` inlines (the constant, the field name, the lookup table, a
memo of text already converted) and the exact converter it falls back to, which raises
:class:`MappingError` with the field and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tstorage_client.record import CID_MAX, CID_MIN, MID_MAX, MID_MIN, MOID_MAX, MOID_MIN
from tstoraged.mapping.convert import to_int
from tstoraged.mapping.errors import (
    ConfigLoc,
    MappingConfigError,
    MappingError,
    describe,
    field_error,
    missing_field,
)
from tstoraged.mapping.model import KEY_PART_EXPECTED, FieldRef, KeyPart, template_field

__all__ = ["KEY_PART_RANGES", "MISSING", "CompiledKeyPart", "compile_key_part"]

# TStorage silently drops a record whose key has a part at its maximum, so the maximum is
# refused like any other out-of-range value.
KEY_PART_RANGES: Final[dict[str, tuple[int, int]]] = {
    "cid": (CID_MIN, CID_MAX - 1),
    "mid": (MID_MIN, MID_MAX - 1),
    "moid": (MOID_MIN, MOID_MAX - 1),
}
"""The storable range (lowest, highest) of each key part."""

MEMO_LIMIT: Final = 4096
"""Distinct texts remembered per key part; meters and channels repeat, serial numbers do not."""


class _Missing:
    """The value of a field a record does not have (distinct from a field that is None)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass(frozen=True)
class CompiledKeyPart:
    """One key part, ready for code generation and for the exact path.

    Exactly one of ``constant`` and ``field`` is set. For a field, ``convert`` is the exact
    conversion of the field's value (``MISSING`` when absent); ``table`` is the lookup table,
    or ``memo`` the cache of text values that ``convert`` fills as it meets them.
    """

    name: str
    lowest: int
    highest: int
    constant: int | None = None
    field: str | None = None
    optional: bool = False
    """A default covers a missing field (read with ``fields.get``)."""
    table: Mapping[str, int] | None = None
    memo: dict[str, int] | None = None
    convert: Callable[[Any], int] | None = None

    def read(self, fields: Mapping[str, Any]) -> int:
        """The part's value for one record (the exact path)."""
        if self.constant is not None:
            return self.constant
        assert self.convert is not None
        return self.convert(fields.get(self.field or "", MISSING))


def _range_text(name: str) -> str:
    lowest, highest = KEY_PART_RANGES[name]
    return f"{name} must be {lowest}..{highest} (TStorage drops keys at the maximum)"


def _check_range(name: str, value: int, loc: ConfigLoc) -> list[tuple[ConfigLoc, str]]:
    lowest, highest = KEY_PART_RANGES[name]
    return [] if lowest <= value <= highest else [(loc, f"{value}: {_range_text(name)}")]


def compile_key_part(
    name: str, part: KeyPart, lookups: Mapping[str, Mapping[str, int]]
) -> CompiledKeyPart:
    """Compile the config of key part ``name``; config errors raise :class:`MappingConfigError`."""
    loc: ConfigLoc = ("key", name)
    lowest, highest = KEY_PART_RANGES[name]
    if isinstance(part, bool):
        raise MappingConfigError([(loc, f"{KEY_PART_EXPECTED}, got a boolean")])
    if isinstance(part, int):
        problems = _check_range(name, part, loc)
        if problems:
            raise MappingConfigError(problems)
        return CompiledKeyPart(name, lowest, highest, constant=part)
    if isinstance(part, str):
        field = template_field(part)
        if field is None:
            raise MappingConfigError([(loc, f"{KEY_PART_EXPECTED}, got {part!r}")])
        part = FieldRef(field=field)
    if part.default is not None:
        problems = _check_range(name, part.default, (*loc, "default"))
        if problems:
            raise MappingConfigError(problems)
    if part.lookup is None:
        memo: dict[str, int] = {}
        convert = _number_converter(name, part.field, part.default, memo)
        return CompiledKeyPart(
            name,
            lowest,
            highest,
            field=part.field,
            optional=part.default is not None,
            memo=memo,
            convert=convert,
        )
    table, table_name = _resolve_table(name, part, lookups)
    return CompiledKeyPart(
        name,
        lowest,
        highest,
        field=part.field,
        optional=True,  # fields.get: a missing field gets the default or the exact message
        table=table,
        convert=_lookup_converter(part.field, table, table_name, part.default),
    )


def _resolve_table(
    name: str, part: FieldRef, lookups: Mapping[str, Mapping[str, int]]
) -> tuple[dict[str, int], str]:
    """The lookup table of ``part`` (named or inline), with every value range-checked."""
    if isinstance(part.lookup, str):
        table = lookups.get(part.lookup)
        if table is None:
            known = ", ".join(sorted(lookups)) or "none defined"
            loc: ConfigLoc = ("key", name, "lookup")
            raise MappingConfigError(
                [(loc, f"unknown lookup table {part.lookup!r} (known: {known})")]
            )
        table_loc: ConfigLoc = ("lookups", part.lookup)
        table_name = part.lookup
    else:
        assert part.lookup is not None
        table = part.lookup
        table_loc = ("key", name, "lookup")
        table_name = "inline"
    problems = []
    for text, value in table.items():
        problems += _check_range(name, value, (*table_loc, text))
    if problems:
        raise MappingConfigError(problems)
    return dict(table), table_name


def _is_absent(value: Any) -> bool:
    """A field that is not there, null, or blank text (an empty CSV cell)."""
    return value is MISSING or value is None or (isinstance(value, str) and not value.strip())


def _absent(field: str, value: Any, default: int | None) -> int:
    """The default for a missing or empty field, or the error that says which it was."""
    if default is not None:
        return default
    if value is MISSING:
        raise missing_field(field)
    raise MappingError(f"field {field!r} is empty")


def _number_converter(
    name: str, field: str, default: int | None, memo: dict[str, int]
) -> Callable[[Any], int]:
    lowest, highest = KEY_PART_RANGES[name]

    def convert(value: Any) -> int:
        if _is_absent(value):
            return _absent(field, value, default)
        number = to_int(value, field)
        if not lowest <= number <= highest:
            raise field_error(field, value, f"is out of range: {_range_text(name)}")
        if type(value) is str and len(memo) < MEMO_LIMIT:
            memo[value] = number
        return number

    return convert


def _lookup_converter(
    field: str, table: Mapping[str, int], table_name: str, default: int | None
) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if _is_absent(value):
            return _absent(field, value, default)
        # Tables are keyed by text; a JSON number 3 finds the entry "3".
        found = table.get(value if type(value) is str else str(value))
        if found is not None:
            return found
        if default is not None:
            return default
        where = "the inline lookup table" if table_name == "inline" else f"lookup {table_name!r}"
        raise MappingError(f"field {field!r}: {describe(value)} is not in {where}")

    return convert
