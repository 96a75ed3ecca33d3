"""The built-in message decoders: ``json``, ``text``, ``raw``, ``struct`` and ``csv``.

Each turns one payload into a list of readings (field dicts); see :mod:`tstoraged.decoding`.
They are contributed through the ``tstoraged_message_decoders`` hook like a third-party one.

    decoder = { type = "json" }                                  # {"ts": .., "temp": ..}
    decoder = { type = "json", fields = { ts = "time", temp = "data.t" } }
    decoder = { type = "json", readings = "values" }             # [{..}, {..}] or {name: value}
    decoder = { type = "text", field = "value" }                 # "21.5"
    decoder = { type = "raw", field = "payload" }                # the bytes as they are
    decoder = { type = "struct", format = "<Qd", fields = ["ts", "value"] }
    decoder = { type = "csv", columns = ["ts", "name", "value"] }   # one reading per line
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tstoraged.decoding import DecodeError, DecoderType, MessageDecoder

__all__ = [
    "BUILTIN_DECODERS",
    "CsvDecoderConfig",
    "JsonDecoderConfig",
    "RawDecoderConfig",
    "StructDecoderConfig",
    "TextDecoderConfig",
]

_INDEX = re.compile(r"\[(\d+)\]")
_MISSING = object()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- json -----------------------------------------------------------------------------------


def _parse_path(path: str) -> tuple[str | int, ...]:
    """``"data.values[0].t"`` -> ``("data", "values", 0, "t")``; digits index arrays."""
    text = _INDEX.sub(r".\1", path.strip())
    parts = text.split(".")
    if not text or any(not part for part in parts):
        raise ValueError(f"bad field path {path!r} (use dots: 'data.temp', 'values[0].t')")
    return tuple(int(part) if part.isdigit() else part for part in parts)


def _walk(node: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(node, dict):
            node = node.get(str(step), _MISSING)
        elif isinstance(node, list) and isinstance(step, int):
            node = node[step] if step < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


class JsonDecoderConfig(_Model):
    """Settings of ``type = "json"``."""

    fields: dict[str, str] | None = Field(
        default=None,
        description="Field name -> path in the message ('data.temp', 'values[0]'). "
        "Without it, the top-level keys of the object (or of each reading) are the fields.",
    )
    readings: str | None = Field(
        default=None,
        description="Path of an array (each element a reading) or an object (each name -> "
        "value a reading) holding several readings per message. A message that is an array "
        "is always one reading per element.",
    )
    reading_fields: dict[str, str] | None = Field(
        default=None,
        description="Field name -> path inside each reading (default: its top-level keys).",
    )
    name_field: str = Field(
        default="name", description="Field of a reading's name when readings is an object."
    )
    value_field: str = Field(
        default="value", description="Field of a reading that is a plain value, not an object."
    )

    @field_validator("fields", "reading_fields")
    @classmethod
    def _valid_paths(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for path in (value or {}).values():
            _parse_path(path)
        return value

    @field_validator("readings")
    @classmethod
    def _valid_readings(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_path(value)
        return value


def _extractor(
    paths: Mapping[str, str] | None, value_field: str
) -> Callable[[Any], dict[str, Any]]:
    """Node -> fields: by ``paths``, else the node's scalar top-level keys (or the value)."""
    if paths is None:

        def top_level(node: Any) -> dict[str, Any]:
            if type(node) is dict:
                return node
            if isinstance(node, list):
                raise DecodeError("a reading is an array, expected an object or a value")
            return {value_field: node}

        return top_level
    compiled = [(name, _parse_path(path), path) for name, path in paths.items()]
    simple = all(len(path) == 1 and isinstance(path[0], str) for _, path, _ in compiled)

    def by_paths(node: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if simple and type(node) is dict:
            get = node.get
            for name, path, text in compiled:
                value = get(path[0], _MISSING)
                if value is _MISSING:
                    raise DecodeError(f"no {text!r} in the message")
                fields[name] = value
            return fields
        for name, path, text in compiled:
            value = _walk(node, path)
            if value is _MISSING:
                raise DecodeError(f"no {text!r} in the message")
            fields[name] = value
        return fields

    return by_paths


def _json_decoder(config: JsonDecoderConfig) -> MessageDecoder:
    loads = json.loads
    message_fields = _extractor(config.fields, config.value_field)
    reading_fields = _extractor(config.reading_fields, config.value_field)
    readings_path = _parse_path(config.readings) if config.readings else None
    name_field, value_field = config.name_field, config.value_field

    def several(node: Any, common: Mapping[str, Any]) -> list[dict[str, Any]]:
        if isinstance(node, list):
            return [{**common, **reading_fields(item)} for item in node]
        if isinstance(node, dict):
            out = []
            for name, item in node.items():
                fields = reading_fields(item) if type(item) is dict else {value_field: item}
                out.append({**common, name_field: name, **fields})
            return out
        raise DecodeError(f"readings {config.readings!r} is not an array or an object")

    def decode(payload: bytes) -> Sequence[Mapping[str, Any]]:
        try:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                document = loads(payload)  # UTF-16 or UTF-32 JSON, which json detects
            else:
                document = loads(text)  # cheaper than loads(bytes), which detects first
        except ValueError as exc:  # also UnicodeDecodeError
            raise DecodeError(f"not JSON: {exc}") from None
        if readings_path is None:
            if isinstance(document, list):
                return several(document, {})
            return [message_fields(document)]
        node = _walk(document, readings_path)
        if node is _MISSING:
            raise DecodeError(f"no {config.readings!r} in the message")
        common = message_fields(document) if config.fields is not None else {}
        return several(node, common)

    return decode


# -- text -----------------------------------------------------------------------------------


class TextDecoderConfig(_Model):
    """Settings of ``type = "text"``: the payload is one number ("21.5", "-3", "1e3")."""

    field: str = Field(default="value", min_length=1, description="Field of the number.")
    encoding: str = Field(default="utf-8", description="Text encoding of the payload.")


def _text_decoder(config: TextDecoderConfig) -> MessageDecoder:
    field, encoding = config.field, config.encoding

    def decode(payload: bytes) -> Sequence[Mapping[str, Any]]:
        try:
            text = payload.decode(encoding).strip()
        except UnicodeDecodeError:
            raise DecodeError(f"not {encoding} text") from None
        number: int | float
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise DecodeError(f"not a number: {text[:40]!r}") from None
            if not math.isfinite(number):
                raise DecodeError(f"not a finite number: {text[:40]!r}") from None
        return [{field: number}]

    return decode


# -- raw ------------------------------------------------------------------------------------


class RawDecoderConfig(_Model):
    """Settings of ``type = "raw"``: the payload bytes as one field."""

    field: str = Field(default="payload", min_length=1, description="Field of the bytes.")


def _raw_decoder(config: RawDecoderConfig) -> MessageDecoder:
    field = config.field
    return lambda payload: [{field: bytes(payload)}]


# -- struct ---------------------------------------------------------------------------------


class StructDecoderConfig(_Model):
    """Settings of ``type = "struct"``: a binary record unpacked with a struct format."""

    format: str = Field(description='A struct format, e.g. "<Qd" (little-endian u64, double).')
    fields: list[str] = Field(min_length=1, description="One field name per unpacked value.")
    repeat: bool = Field(
        default=False,
        description="The payload is several such records back to back, one reading each.",
    )

    @model_validator(mode="after")
    def _fields_match_format(self) -> StructDecoderConfig:
        try:
            packer = struct.Struct(self.format)
        except struct.error as exc:
            raise ValueError(f"bad struct format {self.format!r}: {exc}") from None
        count = len(packer.unpack(bytes(packer.size)))
        if count != len(self.fields):
            raise ValueError(
                f"format {self.format!r} unpacks {count} values but {len(self.fields)} fields "
                "are named"
            )
        return self


def _struct_decoder(config: StructDecoderConfig) -> MessageDecoder:
    packer = struct.Struct(config.format)
    names = tuple(config.fields)
    size = packer.size

    def decode(payload: bytes) -> Sequence[Mapping[str, Any]]:
        if config.repeat:
            if not payload or len(payload) % size:
                raise DecodeError(f"payload is {len(payload)} bytes, not a multiple of {size}")
            return [dict(zip(names, values, strict=True)) for values in packer.iter_unpack(payload)]
        if len(payload) != size:
            raise DecodeError(f"payload is {len(payload)} bytes, format needs {size}")
        return [dict(zip(names, packer.unpack(payload), strict=True))]

    return decode


# -- csv ------------------------------------------------------------------------------------


class CsvDecoderConfig(_Model):
    """Settings of ``type = "csv"``: each line of the payload is one reading."""

    columns: list[str] = Field(min_length=1, description="Names of the columns, in order.")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    header: bool = Field(
        default=False, description="The first line of every message names columns; skipped."
    )
    encoding: str = "utf-8"


def _csv_decoder(config: CsvDecoderConfig) -> MessageDecoder:
    columns = tuple(config.columns)

    def decode(payload: bytes) -> Sequence[Mapping[str, Any]]:
        try:
            text = payload.decode(config.encoding)
        except UnicodeDecodeError:
            raise DecodeError(f"not {config.encoding} text") from None
        reader = csv.reader(
            io.StringIO(text), delimiter=config.delimiter, quotechar=config.quotechar, strict=True
        )
        readings = []
        try:
            for number, row in enumerate(reader, 1):
                if not row or (config.header and number == 1):
                    continue
                if len(row) != len(columns):
                    raise DecodeError(f"line {number} has {len(row)} columns, not {len(columns)}")
                readings.append(dict(zip(columns, row, strict=True)))
        except csv.Error as exc:
            raise DecodeError(f"bad CSV: {exc}") from None
        if not readings:
            raise DecodeError("no CSV lines in the message")
        return readings

    return decode


BUILTIN_DECODERS: list[DecoderType[Any]] = [
    DecoderType(
        "json", JsonDecoderConfig, _json_decoder, "JSON objects, arrays and name -> value maps"
    ),
    DecoderType("text", TextDecoderConfig, _text_decoder, "one number as text"),
    DecoderType("raw", RawDecoderConfig, _raw_decoder, "the payload bytes as one field"),
    DecoderType("struct", StructDecoderConfig, _struct_decoder, "binary records (struct format)"),
    DecoderType("csv", CsvDecoderConfig, _csv_decoder, "CSV lines, one reading each"),
]
"""The decoders this plugin contributes."""
