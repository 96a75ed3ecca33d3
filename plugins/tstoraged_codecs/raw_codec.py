"""The ``raw`` codec: one field's bytes as the payload.

    payload = { codec = "raw", field = "data" }                      # bytes as-is, text as UTF-8
    payload = { codec = "raw", field = "frame", encoding = "hex" }   # text "0a1b" -> b"\\x0a\\x1b"

``encoding`` says how a text value spells the bytes: ``utf-8`` (the default: the text's
UTF-8 bytes), ``hex`` or ``base64`` (decoded). Bytes values are always taken as they are.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tstoraged.mapping.codecs import CodecType, PayloadEncoder
from tstoraged.mapping.errors import field_error, missing_field

__all__ = ["RAW_CODEC", "RawCodecConfig"]


class RawCodecConfig(BaseModel):
    """Settings of ``codec = "raw"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, description="The field holding the payload.")
    encoding: Literal["utf-8", "hex", "base64"] = Field(
        default="utf-8", description="How a text value spells the bytes."
    )


def _from_hex(text: str) -> bytes:
    return bytes.fromhex(text)


def _from_base64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _raw_encoder(config: RawCodecConfig) -> PayloadEncoder:
    field = config.field
    decode: Callable[[str], bytes] | None = {
        "utf-8": None,
        "hex": _from_hex,
        "base64": _from_base64,
    }[config.encoding]

    def encode(fields: Mapping[str, Any]) -> bytes:
        try:
            value = fields[field]
        except KeyError:
            raise missing_field(field) from None
        kind = type(value)
        if kind is bytes:
            return value  # type: ignore[no-any-return]
        if kind is str:
            if decode is None:
                return value.encode()  # type: ignore[no-any-return]
            try:
                return decode(value)
            except (ValueError, binascii.Error):
                raise field_error(field, value, f"is not valid {config.encoding}") from None
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        raise field_error(field, value, f"is not text or bytes ({kind.__name__})")

    return encode


RAW_CODEC = CodecType(
    name="raw",
    config_model=RawCodecConfig,
    factory=_raw_encoder,
    description="One field's bytes as they are (text as UTF-8, or decoded from hex/base64).",
)
