"""The files source's config model, and its registration through the entry-point group."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from tstoraged_files import FilesConfig, FilesSource

from tstoraged.plugins import PluginManager

BASE: dict[str, Any] = {
    "type": "files",
    "name": "line-3",
    "key": {"cid": 7, "mid": "{meter}", "moid": "{channel}"},
    "cap": {"field": "ts", "unit": "ms"},
    "payload": {"format": "<if?", "fields": ["count", "temp", "ok"]},
}


def errors(settings: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        FilesConfig.model_validate(settings)
    return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors()]


def test_the_documented_example_validates() -> None:
    config = FilesConfig.model_validate(
        {**BASE, "mode": "tail", "paths": ["/var/log/plc/*.csv"], "start_at": "beginning"}
    )
    assert config.format == "csv"
    assert config.csv.header is True


def test_tail_mode_needs_paths_and_drop_mode_needs_a_directory() -> None:
    assert any("needs paths" in e for e in errors({**BASE, "mode": "tail"}))
    assert any("needs directory" in e for e in errors({**BASE, "mode": "drop"}))


def test_drop_directories_default_beside_the_drop_directory() -> None:
    config = FilesConfig.model_validate({**BASE, "mode": "drop", "directory": "/srv/drop"})
    assert str(config.resolved_done_dir) == "/srv/drop/done"
    assert str(config.resolved_failed_dir) == "/srv/drop/failed"


def test_csv_without_header_needs_columns() -> None:
    settings = {**BASE, "paths": ["x"], "csv": {"header": False}}
    assert errors(settings) == [
        "csv: Value error, csv.columns is required when csv.header is false"
    ]


def test_unknown_keys_and_bad_values_are_named() -> None:
    found = errors({**BASE, "paths": ["x"], "format": "xml", "encodng": "utf-8"})
    assert [e.split(":")[0] for e in found] == ["format", "encodng"]
    found = errors({**BASE, "paths": ["x"], "encoding": "no-such-codec"})
    assert found == ["encoding: Value error, unknown text encoding 'no-such-codec'"]


def test_record_csv_needs_no_mapping_and_refuses_one() -> None:
    config = FilesConfig.model_validate(
        {"type": "files", "name": "r", "paths": ["x"], "format": "records"}
    )
    assert config.key.cid == "{cid}"
    assert config.cap.unit == "ns"
    assert config.payload.codec == "raw"
    assert (
        "remove ['cap', 'key', 'payload']"
        in errors({**BASE, "paths": ["x"], "format": "records"})[0]
    )


def test_the_files_source_type_is_found_through_the_entry_point_group() -> None:
    manager = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "files"})
    source_type = manager.source_types["files"]
    assert source_type.source_class is FilesSource
    assert source_type.config_model is FilesConfig


def test_encodings_that_are_not_ascii_compatible_are_refused() -> None:
    found = errors({**BASE, "paths": ["x"], "encoding": "utf-16"})
    assert found == [
        "encoding: Value error, encoding 'utf-16' is not ASCII-compatible (e.g. utf-8, latin-1)"
    ]


def test_record_csv_accepts_its_own_mapping_back_as_check_prints_it() -> None:
    shown = FilesConfig.model_validate(
        {"type": "files", "name": "r", "paths": ["x"], "format": "records"}
    ).model_dump(mode="json")
    assert FilesConfig.model_validate(shown).model_dump(mode="json") == shown


def test_settings_of_another_mode_are_refused_unless_they_are_defaults() -> None:
    found = errors({**BASE, "paths": ["x"], "directory": "/srv/drop", "settle_time": "5s"})
    assert found == [": Value error, directory, settle_time not used in mode 'tail'"]
    shown = FilesConfig.model_validate({**BASE, "paths": ["x"]}).model_dump(mode="json")
    assert FilesConfig.model_validate(shown).model_dump(mode="json") == shown
