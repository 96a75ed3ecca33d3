"""Payload codecs are plugins: a third-party codec registers through the hook and maps records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy
import pytest
from pydantic import BaseModel, ConfigDict

import tstoraged
import tstoraged.hookspecs
from tstoraged.mapping import (
    CodecType,
    MappingConfigError,
    MappingError,
    PayloadEncoder,
    compile_mapping,
)
from tstoraged.source import SourceConfig


class UpperConfig(BaseModel):
    """``codec = "upper"``: one text field, upper-cased, with a prefix."""

    model_config = ConfigDict(extra="forbid")

    field: str
    prefix: str = ""


def upper_encoder(config: UpperConfig) -> PayloadEncoder:
    prefix = config.prefix.encode()
    field = config.field

    def encode(fields: Mapping[str, Any]) -> bytes:
        return prefix + str(fields[field]).upper().encode()

    return encode


class UpperCodecPlugin:
    """A third-party plugin object, written as a plugin author would."""

    @tstoraged.hookimpl
    def tstoraged_payload_codecs(self) -> list[CodecType[Any]]:
        return [CodecType("upper", UpperConfig, upper_encoder, "Upper-cased text.")]


def plugin_manager(*plugins: object) -> pluggy.PluginManager:
    manager = pluggy.PluginManager("tstoraged")
    manager.add_hookspecs(tstoraged.hookspecs)
    for plugin in plugins:
        manager.register(plugin)
    return manager


def codecs_of(manager: pluggy.PluginManager) -> dict[str, CodecType[Any]]:
    return {c.name: c for found in manager.hook.tstoraged_payload_codecs() for c in found}


def source(payload: dict[str, Any]) -> SourceConfig:
    return SourceConfig.model_validate(
        {"type": "t", "name": "s", "key": {"cid": 1, "mid": "{m}", "moid": 0}, "payload": payload}
    )


def test_a_codec_registered_through_the_hook_maps_records() -> None:
    codecs = codecs_of(plugin_manager(UpperCodecPlugin()))
    mapping = compile_mapping(source({"codec": "upper", "field": "msg", "prefix": ">"}), codecs)
    record = mapping({"m": 5, "msg": "hello"}, received_ns=10**18)
    assert record.value == b">HELLO"
    assert record.key.mid == 5


def test_a_plugin_codec_config_is_validated_by_its_own_model() -> None:
    codecs = codecs_of(plugin_manager(UpperCodecPlugin()))
    with pytest.raises(MappingConfigError) as caught:
        compile_mapping(source({"codec": "upper", "field": "msg", "colour": "red"}), codecs)
    assert caught.value.loc == ("payload", "colour")


def test_a_plugin_codec_that_fails_unexpectedly_fails_only_that_record() -> None:
    codecs = codecs_of(plugin_manager(UpperCodecPlugin()))
    mapping = compile_mapping(source({"codec": "upper", "field": "msg"}), codecs)
    with pytest.raises(MappingError, match=r"^payload codec 'upper' failed: KeyError: 'msg'$"):
        mapping({"m": 5}, received_ns=10**18)
    records, failures = mapping.map_many([{"m": 1}, {"m": 2, "msg": "ok"}], received_ns=10**18)
    assert [record.value for record in records] == [b"OK"]
    assert failures == [(0, "payload codec 'upper' failed: KeyError: 'msg'")]


def test_the_builtin_codecs_are_found_through_the_codecs_entry_point() -> None:
    manager = plugin_manager()
    loaded = manager.load_setuptools_entrypoints("tstoraged", name="codecs")
    assert loaded == 1
    codecs = codecs_of(manager)
    assert {"struct", "raw", "json"} <= set(codecs)
    mapping = compile_mapping(source({"format": "<h", "fields": ["v"]}), codecs)  # struct default
    assert mapping({"m": 1, "v": "-2"}, received_ns=10**18).value == b"\xfe\xff"
