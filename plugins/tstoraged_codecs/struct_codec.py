"""The ``struct`` codec: named fields packed with a ``struct`` format (the default codec).

    payload = { format = "<if?", fields = ["count", "temp", "ok"] }

Each value the format packs takes one field, in order. Text is converted: integers for the
integer codes, floats for ``e``/``f``/``d``, booleans for ``?`` (true/false, yes/no, on/off,
1/0, any case), UTF-8 bytes for ``c``/``s``/``p``. A value that does not fit its code is an
error, never silently truncated or wrapped.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tstoraged.mapping.codecs import CodecType, PayloadEncoder
from tstoraged.mapping.codegen import build_functions, indent
from tstoraged.mapping.convert import BOOL_SPELLINGS, to_bool, to_float, to_int
from tstoraged.mapping.errors import field_error, missing_field

__all__ = ["STRUCT_CODEC", "Slot", "StructCodecConfig", "format_slots"]

_BYTE_ORDER = "@=<>!"
_ITEM = re.compile(r"(\d*)([a-zA-Z?])")
_SIGNED = frozenset("bhilqn")
_UNSIGNED = frozenset("BHILQNP")
_FLOATS = frozenset("efd")
_BYTES = frozenset("csp")


def _checked_format(value: str) -> struct.Struct:
    try:
        return struct.Struct(value)
    except struct.error as exc:
        raise ValueError(f"bad struct format {value!r}: {exc}") from None


class StructCodecConfig(BaseModel):
    """Settings of ``codec = "struct"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(description='A struct format string, e.g. "<if?" (little-endian).')
    fields: list[str] = Field(description="One field name per value the format packs.")

    @field_validator("format")
    @classmethod
    def _valid_format(cls, value: str) -> str:
        _checked_format(value)
        return value

    @field_validator("fields")
    @classmethod
    def _one_field_per_value(cls, fields: list[str], info: ValidationInfo) -> list[str]:
        fmt = info.data.get("format")
        if fmt is None:
            return fields  # the format itself is invalid and reported
        count = len(format_slots(fmt))
        if count != len(fields):
            raise ValueError(
                f"format {fmt!r} packs {count} value{'s' * (count != 1)} "
                f"but {len(fields)} field{'s' * (len(fields) != 1)} are given"
            )
        return fields


@dataclass(frozen=True)
class Slot:
    """One value of a struct format: its code, integer range, or byte size."""

    code: str
    size: int = 1
    """``s``/``p``: the bytes the value may take."""
    lowest: int = 0
    highest: int = 0

    @property
    def kind(self) -> str:
        """``int``, ``float``, ``bool`` or ``bytes``."""
        if self.code in _SIGNED or self.code in _UNSIGNED:
            return "int"
        if self.code in _FLOATS:
            return "float"
        return "bool" if self.code == "?" else "bytes"


def _byte_order(fmt: str) -> str:
    """The format's byte-order character; ``@`` (native) when it has none."""
    return fmt[0] if fmt and fmt[0] in _BYTE_ORDER else "@"


def format_slots(fmt: str) -> list[Slot]:
    """The values a (valid) struct format packs, in order."""
    order = _byte_order(fmt)
    slots: list[Slot] = []
    for count_text, code in _ITEM.findall(fmt[1:] if fmt[:1] == order else fmt):
        count = int(count_text) if count_text else 1
        if code == "x":
            continue
        if code in "sp":
            # 'p' stores a length byte, so it holds one byte less than its size.
            slots.append(Slot(code, size=count - (code == "p")))
        elif code in _SIGNED or code in _UNSIGNED:
            bits = 8 * struct.calcsize(order + code)
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if code in _UNSIGNED:
                low, high = 0, 2**bits - 1
            slots += [Slot(code, lowest=low, highest=high)] * count
        else:
            slots += [Slot(code)] * count
    return slots


def _exact_converter(slot: Slot, field: str, order: str) -> Callable[[Any], Any]:
    """The exact conversion of one field's value for ``slot``, with a precise error."""
    if slot.kind == "int":

        def to_integer(value: Any) -> int:
            number = to_int(value, field, allow_bool=True)
            if not slot.lowest <= number <= slot.highest:
                raise field_error(
                    field,
                    value,
                    f"is out of range for {slot.code!r} ({slot.lowest}..{slot.highest})",
                )
            return number

        return to_integer
    if slot.kind == "float":
        single = struct.Struct(order + slot.code)

        def to_floating(value: Any) -> float:
            number = to_float(value, field)
            try:
                single.pack(number)
            except OverflowError:
                raise field_error(field, value, f"is out of range for {slot.code!r}") from None
            return number

        return to_floating
    if slot.kind == "bool":
        return lambda value: to_bool(value, field)
    return _bytes_converter(slot, field)


def _bytes_converter(slot: Slot, field: str) -> Callable[[Any], bytes]:
    def to_bytes(value: Any) -> bytes:
        if isinstance(value, str):
            data = value.encode()
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        elif slot.code == "c" and type(value) is int and 0 <= value <= 255:
            data = bytes((value,))
        else:
            raise field_error(field, value, f"is not text or bytes for {slot.code!r}")
        if slot.code == "c" and len(data) != 1:
            raise field_error(field, value, "is not a single byte for 'c'")
        if len(data) > slot.size:
            raise field_error(
                field, value, f"is {len(data)} bytes, more than {slot.code!r} holds ({slot.size})"
            )
        return data

    return to_bytes


def _exact_encoder(config: StructCodecConfig) -> PayloadEncoder:
    packer = struct.Struct(config.format)
    order = _byte_order(config.format)
    steps = [
        (field, _exact_converter(slot, field, order))
        for field, slot in zip(config.fields, format_slots(config.format), strict=True)
    ]

    def encode(fields: Mapping[str, Any]) -> bytes:
        values = []
        for field, convert in steps:
            try:
                value = fields[field]
            except KeyError:
                raise missing_field(field) from None
            values.append(convert(value))
        return packer.pack(*values)

    return encode


def _fast_lines(index: int, field: str, slot: Slot) -> tuple[list[str], str]:
    """Lines that read and convert one value the cheap way, and the expression to pack."""
    var = f"v{index}"
    read = f"{var} = fields[{field!r}]"
    if slot.kind == "bool":
        return [], f"_BOOL[fields[{field!r}]]"
    if slot.kind == "int":  # struct packs native ints itself, and refuses floats
        return [read, f"if type({var}) is str:", f"    {var} = int({var})"], var
    if slot.kind == "float":  # struct packs ints and floats itself
        return [read, f"if type({var}) is str:", f"    {var} = float({var})"], var
    limit = [f"if len({var}) > {slot.size}:", "    raise ValueError"]
    return [read, f"if type({var}) is str:", f"    {var} = {var}.encode()", *limit], var


def _struct_encoder(config: StructCodecConfig) -> PayloadEncoder:
    """Compile the config into a generated encoder with the exact one as its fallback."""
    lines: list[str] = []
    values: list[str] = []
    for index, (field, slot) in enumerate(
        zip(config.fields, format_slots(config.format), strict=True)
    ):
        slot_lines, value = _fast_lines(index, field, slot)
        lines += slot_lines
        values.append(value)
    source = "\n".join(
        [
            "def _build(_pack, _exact, _BOOL):",
            "    def encode(fields):",
            "        try:",
            *indent(lines, 3),
            f"            return _pack({', '.join(values)})",
            "        except Exception:",
            "            return _exact(fields)",
            "    return encode",
            "",
        ]
    )
    namespace = {
        "_pack": struct.Struct(config.format).pack,
        "_exact": _exact_encoder(config),
        "_BOOL": BOOL_SPELLINGS,
    }
    (encode,) = build_functions(source, "struct codec", namespace)
    return encode


STRUCT_CODEC = CodecType(
    name="struct",
    config_model=StructCodecConfig,
    factory=_struct_encoder,
    description="Fields packed with a struct format, e.g. <if? (int32, float32, bool).",
)
