"""Modbus data types and byte/word orders: registers in, values out (no I/O).

A Modbus register is 16 bits sent high byte first. Values wider than one register, and
devices that swap bytes, need an *order*: the letters name the bytes of the value from the
most significant (``A``) down, in the sequence the device sends them::

    float32 123.456 = 0x42F6E979 -> A=42 B=F6 C=E9 D=79
    ABCD  registers 0x42F6 0xE979   big-endian (the Modbus convention)
    CDAB  registers 0xE979 0x42F6   words swapped (low word first)
    BADC  registers 0xF642 0x79E9   bytes swapped inside each word
    DCBA  registers 0x79E9 0xF642   little-endian

The same two switches (word order, byte order inside a word) apply to every width: a 64-bit
``CDAB`` value sends its lowest word first, each word high byte first; a 16-bit value only
has a byte order (``ABCD`` = ``CDAB``, ``BADC`` = ``DCBA``); strings follow the same rule.

Every order is one ``struct.unpack_from`` on one of two buffers made once per response: the
registers packed big-endian (``ABCD``, and ``DCBA`` read little-endian) and the registers
packed little-endian (``BADC``, and ``CDAB`` read little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "BIT_TABLES",
    "DATA_TYPES",
    "ORDERS",
    "REGISTER_TABLES",
    "TABLES",
    "DataType",
    "Order",
    "RegisterBuffers",
    "Table",
    "ValueDecoder",
    "decode_all",
    "register_width",
]

Table = Literal["coil", "discrete_input", "holding", "input"]
"""The four Modbus tables: coils and discrete inputs hold bits, the others registers."""
TABLES: Final[tuple[Table, ...]] = get_args(Table)
BIT_TABLES: Final = frozenset({"coil", "discrete_input"})
REGISTER_TABLES: Final = frozenset({"holding", "input"})

DataType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
"""A point's data type; ``bool`` in a register table is one bit of a register."""
DATA_TYPES: Final[tuple[DataType, ...]] = get_args(DataType)

Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
"""Byte and word order of a multi-byte value (see the module docstring)."""
ORDERS: Final[tuple[Order, ...]] = get_args(Order)

_STRUCT_CODES: Final[dict[str, str]] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
_WIDTHS: Final[dict[str, int]] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
INTEGER_TYPES: Final = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})
FLOAT_TYPES: Final = frozenset({"float32", "float64"})

# (struct byte order, which buffer): buffer 0 = registers big-endian, 1 = little-endian.
_ORDER_ACCESS: Final[dict[str, tuple[str, int]]] = {
    "ABCD": (">", 0),
    "DCBA": ("<", 0),
    "BADC": (">", 1),
    "CDAB": ("<", 1),
}


def register_width(data_type: DataType, length: int | None = None) -> int:
    """Registers a value of ``data_type`` takes (``length`` for a string)."""
    if data_type == "string":
        if length is None or length < 1:
            raise ValueError("a string needs a length of at least one register")
        return length
    return _WIDTHS[data_type]


class RegisterBuffers:
    """The registers of one response as the two byte buffers the decoders read."""

    __slots__ = ("buffers", "count")

    def __init__(self, registers: Sequence[int]) -> None:
        count = len(registers)
        self.count = count
        self.buffers = (
            struct.pack(f">{count}H", *registers),
            struct.pack(f"<{count}H", *registers),
        )


@dataclass(frozen=True, slots=True)
class ValueDecoder:
    """Decodes one value at a register offset of a response, in one type and order.

    ``decode(buffers, offset)`` returns an int (integer types), a float (float types), a
    bool (``bit`` of a register) or a str (``string``: trailing NULs and blanks removed).
    """

    data_type: DataType
    order: Order = "ABCD"
    bit: int | None = None
    length: int | None = None

    @property
    def width(self) -> int:
        """Registers the value takes."""
        return register_width(self.data_type, self.length)

    def decode(self, registers: RegisterBuffers, offset: int) -> int | float | bool | str:
        """The value starting ``offset`` registers into the response."""
        endian, which = _ORDER_ACCESS[self.order]
        if self.data_type == "string":
            return _decode_string(registers, offset, self.width, self.order)
        if self.data_type == "bool":
            if self.bit is None:
                raise ValueError("a bool in a register needs a bit index")
            (word,) = struct.unpack_from(endian + "H", registers.buffers[which], offset * 2)
            return bool((word >> self.bit) & 1)
        code = _STRUCT_CODES[self.data_type]
        (value,) = struct.unpack_from(endian + code, registers.buffers[which], offset * 2)
        return value  # type: ignore[no-any-return]

    def compiled(self) -> tuple[struct.Struct, int] | None:
        """``(struct, buffer index)`` for the fast path of a plain number, else None."""
        if self.data_type in ("string", "bool"):
            return None
        endian, which = _ORDER_ACCESS[self.order]
        return struct.Struct(endian + _STRUCT_CODES[self.data_type]), which


def _decode_string(registers: RegisterBuffers, offset: int, width: int, order: Order) -> str:
    start, stop = offset * 2, (offset + width) * 2
    if order in ("ABCD", "DCBA"):
        data = registers.buffers[0][start:stop]
    else:
        data = registers.buffers[1][start:stop]
    if order in ("DCBA", "CDAB"):
        data = data[::-1]
    # Devices pad names and serial numbers with NULs or blanks.
    return data.decode("utf-8", "replace").strip("\x00").rstrip()


def decode_all(registers: Sequence[int]) -> dict[str, dict[str, int | float | str]]:
    """Every data type in every order from the start of ``registers`` (the probe's table).

    Types wider than the registers given are left out; ``string`` uses all of them.
    """
    buffers = RegisterBuffers(registers)
    table: dict[str, dict[str, int | float | str]] = {}
    for data_type in DATA_TYPES:
        if data_type == "bool":
            continue
        length = len(registers) if data_type == "string" else None
        if not registers or register_width(data_type, length) > len(registers):
            continue
        table[data_type] = {
            order: ValueDecoder(data_type, order, length=length).decode(buffers, 0)
            for order in ORDERS
        }
    return table
