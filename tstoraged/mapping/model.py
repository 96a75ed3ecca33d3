"""Config models of the mapping (the ``key``, ``cap`` and ``payload`` tables of a source).

    key = { cid = 7, mid = "{meter}", moid = { field = "channel", lookup = "channels" } }
    cap = { field = "ts", unit = "ms" }          # or unit = "iso8601"; omitted: receive time
    payload = { format = "<if?", fields = ["count", "temp", "ok"] }   # codec "struct"
    payload = { codec = "json", fields = ["temp", "ok"] }
    payload = { codec = "raw", field = "data" }

These models check the *shape* of the tables. What needs the whole source config (does a
named lookup table exist, does a constant fit its key part) is checked when the mapping is
compiled (:func:`tstoraged.mapping.compile.compile_mapping`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["CapMapping", "FieldRef", "KeyMapping", "KeyPart", "PayloadMapping", "template_field"]

_TEMPLATE = re.compile(r"^\{\s*([^{}\s](?:[^{}]*[^{}\s])?)\s*\}$")
_INTEGER_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")

KEY_PART_EXPECTED = (
    "expected an integer, a field reference '{field}', "
    "or a table { field = ..., lookup = ..., default = ... }"
)


def template_field(template: str) -> str | None:
    """The field name of a ``"{field}"`` key-part template, or None when it is not one.

    Blanks around the name are formatting (``"{ meter }"`` is field ``meter``).
    """
    match = _TEMPLATE.match(template)
    return match.group(1) if match else None


class FieldRef(BaseModel):
    """A key part taken from a field, optionally through a lookup table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(min_length=1, description="Name of the field holding the value.")
    lookup: str | dict[str, int] | None = Field(
        default=None,
        description="A lookup table (name in [[sources]].lookups, or inline) mapping text to int.",
    )
    default: int | None = Field(
        default=None,
        description="Used when the field is missing or empty, or its value is not in the lookup.",
    )


KeyPart = int | str | FieldRef
"""An int constant, a ``"{field}"`` reference, or a ``{ field, lookup, default }`` table."""


class KeyMapping(BaseModel):
    """How cid, mid and moid are found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cid: KeyPart
    mid: KeyPart
    moid: KeyPart

    @field_validator("cid", "mid", "moid", mode="before")
    @classmethod
    def _key_part_shape(cls, value: Any) -> Any:
        # Checked before the union is tried, so a bad template gets one clear message
        # instead of one error per union member.
        if isinstance(value, bool):
            raise ValueError(f"{KEY_PART_EXPECTED}, got a boolean")
        if isinstance(value, str):
            if _INTEGER_TEXT.match(value):
                return int(value)  # a constant given as text (environment overrides are text)
            if template_field(value) is None:
                raise ValueError(f"{KEY_PART_EXPECTED}, got {value!r}")
        return value


class CapMapping(BaseModel):
    """Where the capture time comes from. Without ``field``: the time the source received it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = Field(
        default=None, min_length=1, description="Field holding the capture time."
    )
    unit: Literal["s", "ms", "us", "ns", "iso8601"] = Field(
        default="ms", description="Unit of a numeric field, or iso8601 text."
    )
    epoch: Literal["unix", "tstorage"] = Field(
        default="unix",
        description="Epoch of numeric values: 1970-01-01 (unix) or 2001-01-01 (tstorage) UTC.",
    )


class PayloadMapping(BaseModel):
    """Which codec turns fields into payload bytes, with that codec's own settings.

    ``codec`` defaults to ``"struct"``. The remaining keys are validated by the codec's own
    config model (contributed through ``tstoraged_payload_codecs``).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    codec: str = Field(default="struct", description="Payload codec name.")

    def codec_settings(self) -> dict[str, Any]:
        """The codec-specific keys of this table."""
        return dict(self.model_extra or {})
