"""Config models of the mapping (the ``key``, ``cap`` and ``payload`` tables of a source).

    key = { cid = 7, mid = "{meter}", moid = { field = "channel", lookup = "channels" } }
    cap = { field = "ts", unit = "ms" }          # or unit = "iso8601"; omitted: receive time
    payload = { format = "<if?", fields = ["count", "temp", "ok"] }   # codec "struct"
    payload = { codec = "json", fields = ["temp", "ok"] }
    payload = { codec = "raw", field = "data" }
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FieldRef(BaseModel):
    """A key part taken from a field, optionally through a lookup table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(description="Name of the field holding the value.")
    lookup: str | dict[str, int] | None = Field(
        default=None,
        description="A lookup table (name in [[sources]].lookups, or inline) mapping text to int.",
    )
    default: int | None = Field(
        default=None, description="Used when the field is missing or not in the lookup table."
    )


KeyPart = int | str | FieldRef
"""An int constant, a ``"{field}"`` reference, or a ``{ field, lookup, default }`` table."""


class KeyMapping(BaseModel):
    """How cid, mid and moid are found."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cid: KeyPart
    mid: KeyPart
    moid: KeyPart


class CapMapping(BaseModel):
    """Where the capture time comes from. Without ``field``: the time the source received it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = Field(default=None, description="Field holding the capture time.")
    unit: Literal["s", "ms", "us", "ns", "iso8601"] = Field(
        default="ms", description="Unit of a numeric field (Unix epoch), or iso8601 text."
    )
    epoch: Literal["unix", "tstorage"] = Field(
        default="unix", description="Epoch of numeric values."
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
