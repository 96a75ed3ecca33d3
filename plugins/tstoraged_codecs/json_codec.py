"""The ``json`` codec: fields as a compact JSON object (UTF-8).

    payload = { codec = "json" }                            # every field
    payload = { codec = "json", fields = ["temp", "ok"] }   # these fields, in this order

Values must be JSON values (text, numbers, booleans, null, lists and tables of them); NaN
and infinities are refused because they are not JSON.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tstoraged.mapping.codecs import CodecType, PayloadEncoder
from tstoraged.mapping.errors import MappingError, field_error, missing_field

__all__ = ["JSON_CODEC", "JsonCodecConfig"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _c_dumps() -> Callable[[Any], str] | None:
    """The C encoder built once, not per call as ``JSONEncoder.encode`` does (1.7x faster).

    ``c_make_encoder`` is CPython's implementation detail; where it is missing or its
    signature differs, the plain encoder is used.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        iterencode = make(
            None,  # no cycle check: field values come from parsed input, which has no cycles
            _ENCODER.default,
            json.encoder.encode_basestring,
            None,
            _ENCODER.key_separator,
            _ENCODER.item_separator,
            False,
            False,
            False,
        )
        if "".join(iterencode({"a": [1.5, True, None, "é"]}, 0)) != '{"a":[1.5,true,null,"é"]}':
            return None
    except TypeError:
        return None
    return lambda document: "".join(iterencode(document, 0))


_dumps = _c_dumps() or _ENCODER.encode


class JsonCodecConfig(BaseModel):
    """Settings of ``codec = "json"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fields: list[str] | None = Field(
        default=None, description="The fields to include, in order; omitted: every field."
    )


def _json_error(document: Mapping[str, Any]) -> MappingError:
    """Name the first field whose value is not JSON (only runs after encoding failed)."""
    for name, value in document.items():
        try:
            _dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            return field_error(name, value, f"is not a JSON value ({exc})")
    return MappingError("fields are not a JSON object")


def _json_encoder(config: JsonCodecConfig) -> PayloadEncoder:
    names = config.fields

    def encode(fields: Mapping[str, Any]) -> bytes:
        if names is None:
            document = dict(fields)
        else:
            try:
                document = {name: fields[name] for name in names}
            except KeyError as exc:
                raise missing_field(str(exc.args[0])) from None
        try:
            return _dumps(document).encode()
        except (TypeError, ValueError, RecursionError):
            raise _json_error(document) from None

    return encode


JSON_CODEC = CodecType(
    name="json",
    config_model=JsonCodecConfig,
    factory=_json_encoder,
    description="Fields as a compact JSON object, all of them or the listed ones.",
)
