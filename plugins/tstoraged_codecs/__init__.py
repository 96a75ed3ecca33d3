"""The built-in payload codecs of tstoraged: ``struct``, ``raw`` and ``json``.

Registered through the ``tstoraged`` entry point ``codecs``, exactly as a third-party codec
plugin would be.
"""

from __future__ import annotations

from typing import Any

from tstoraged import hookimpl
from tstoraged.mapping.codecs import CodecType
from tstoraged_codecs.json_codec import JSON_CODEC, JsonCodecConfig
from tstoraged_codecs.raw_codec import RAW_CODEC, RawCodecConfig
from tstoraged_codecs.struct_codec import STRUCT_CODEC, StructCodecConfig

__all__ = [
    "JSON_CODEC",
    "RAW_CODEC",
    "STRUCT_CODEC",
    "JsonCodecConfig",
    "RawCodecConfig",
    "StructCodecConfig",
    "tstoraged_payload_codecs",
]


@hookimpl
def tstoraged_payload_codecs() -> list[CodecType[Any]]:
    """Contribute the built-in codecs."""
    return [STRUCT_CODEC, RAW_CODEC, JSON_CODEC]
