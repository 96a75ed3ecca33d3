"""The ``modbus`` payload codec: one point's value as the payload bytes.

    payload = { codec = "modbus" }                 # the modbus source's default
    payload = { codec = "modbus", field = "raw" }  # another field

The value decides the bytes, so each point of one source gets the payload its ``encoding``
asks for: a float (``encoding = "float64"``, the default) is 8 bytes IEEE 754 little-endian,
like ``struct`` format ``<d``; an integer (``encoding = "integer"``) is 8 bytes little-endian
two's complement (``<q``), or unsigned (``<Q``) for a uint64 above 2^63 - 1; a string point's
text is its UTF-8 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tstoraged.mapping.codecs import CodecType, PayloadEncoder
from tstoraged.mapping.errors import field_error, missing_field

__all__ = ["MODBUS_CODEC", "ModbusCodecConfig"]

_DOUBLE = struct.Struct("<d").pack
_INT64 = struct.Struct("<q").pack
_UINT64 = struct.Struct("<Q").pack
_INT64_MAX = 2**63 - 1


class ModbusCodecConfig(BaseModel):
    """Settings of ``codec = "modbus"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(default="value", min_length=1, description="The field to encode.")


def _modbus_encoder(config: ModbusCodecConfig) -> PayloadEncoder:
    name = config.field

    def encode(fields: Mapping[str, Any]) -> bytes:
        try:
            value = fields[name]
        except KeyError:
            raise missing_field(name) from None
        kind = type(value)
        if kind is float:
            return _DOUBLE(value)
        if kind is int:
            if value > _INT64_MAX:
                try:
                    return _UINT64(value)
                except struct.error:
                    raise field_error(name, value, "does not fit 8 bytes") from None
            try:
                return _INT64(value)
            except struct.error:
                raise field_error(name, value, "does not fit 8 bytes") from None
        if kind is bool:
            return _INT64(int(value))
        if kind is str:
            return value.encode()  # type: ignore[no-any-return]
        raise field_error(name, value, f"is not a number or text ({kind.__name__})")

    return encode


MODBUS_CODEC = CodecType(
    name="modbus",
    config_model=ModbusCodecConfig,
    factory=_modbus_encoder,
    description="A Modbus point's value: float64 or int64 little-endian, or UTF-8 text.",
)
