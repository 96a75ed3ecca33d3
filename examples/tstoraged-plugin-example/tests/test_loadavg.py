"""The loadavg source: parsing, fields handed to the mapping, rejects, config model."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import pytest
from pydantic import ValidationError
from tstoraged_example import LoadAvgConfig, LoadAvgSource, parse_loadavg
from tstoraged_example.plugin import tstoraged_source_types

from tstoraged import SourceType
from tstoraged.testing import RecordingContext

LINE = "0.52 0.58 0.59 2/1234 56789\n"


def make_source(path: Path, **settings: object) -> tuple[LoadAvgSource, RecordingContext]:
    config = LoadAvgConfig.model_validate(
        {"type": "loadavg", "name": "load", "path": str(path), **settings}
    )
    context = RecordingContext(config, path.parent / "state")
    return LoadAvgSource(config, context), context


def test_parse_loadavg_reads_the_three_averages_and_task_counts():
    assert parse_loadavg(LINE) == {
        "load1": 0.52,
        "load5": 0.58,
        "load15": 0.59,
        "running": 2,
        "total": 1234,
    }


def test_parse_loadavg_refuses_other_text():
    with pytest.raises(ValueError, match="not a loadavg line"):
        parse_loadavg("hello world")


async def test_one_reading_becomes_one_record_per_window(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text(LINE)
    source, context = make_source(path, host_id=7)
    await source.read_once()

    (records,) = context.emitted
    assert [(r.key.cid, r.key.mid, r.key.moid) for r in records] == [
        (1, 7, 1),
        (1, 7, 5),
        (1, 7, 15),
    ]
    assert [struct.unpack("<d", r.value)[0] for r in records] == [0.52, 0.58, 0.59]
    assert len({r.key.cap for r in records}) == 1  # one reading, one receive time
    assert context.origins == [f"{path}:load1", f"{path}:load5", f"{path}:load15"]


async def test_the_mapping_can_be_overridden_in_the_config(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text(LINE)
    source, context = make_source(
        path,
        key={"cid": 2, "mid": "{running}", "moid": "{minutes}"},
        payload={"codec": "json", "fields": ["load", "total"]},
    )
    await source.read_once()

    first = context.emitted[0][0]
    assert (first.key.cid, first.key.mid, first.key.moid) == (2, 2, 1)
    assert json.loads(first.value) == {"load": 0.52, "total": 1234}


async def test_garbage_is_rejected_not_emitted(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text("garbage\n")
    source, context = make_source(path)
    await source.read_once()

    assert context.emitted == []
    assert len(context.rejected) == 1
    raw, reason, origin = context.rejected[0]
    assert raw == "garbage\n"
    assert "not a loadavg line" in reason
    assert origin == str(path)
    # The core's reject path ran too: the line is in the dead-letter file with its reason.
    dead = (path.parent / "state" / "dead-letter.jsonl").read_text()
    assert "not a loadavg line" in dead


async def test_missing_file_fails_the_poll(tmp_path):
    source, _ = make_source(tmp_path / "absent")
    with pytest.raises(RuntimeError, match="cannot read"):
        await source.read_once()


async def poll_until(condition, task: asyncio.Task[None]) -> None:
    """Let the source run until ``condition()`` holds (bounded wait), then cancel it."""
    for _ in range(10_000):
        if condition():
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert condition()


async def test_run_polls_on_the_schedule_until_cancelled(tmp_path):
    path = tmp_path / "loadavg"
    path.write_text(LINE)
    source, context = make_source(path, interval="10ms")
    task = asyncio.create_task(source.run())
    await poll_until(lambda: len(context.emitted) >= 3, task)
    # Every reading is stamped with its tick, a multiple of the interval (TStorage time is
    # Unix time minus whole seconds, so the remainder is the same in both).
    assert all(records[0].key.cap % 10_000_000 == 0 for records in context.emitted)
    assert context.metric_value("polls_total") >= 3


async def test_a_missing_file_is_retried_at_the_next_tick_not_a_crash(tmp_path):
    path = tmp_path / "loadavg"
    source, context = make_source(path, interval="10ms")
    task = asyncio.create_task(source.run())
    for _ in range(10_000):
        if context.metric_value("poll_failures_total"):
            break
        await asyncio.sleep(0.001)
    assert context.problem is not None
    assert context.problem.startswith("poll failed: RuntimeError: cannot read")
    path.write_text(LINE)  # the file appears: the same instance reads it at a next tick
    await poll_until(lambda: len(context.emitted) >= 1, task)
    assert context.problem is None


def test_config_requires_only_type_and_name_and_has_a_default_mapping():
    config = LoadAvgConfig.model_validate({"type": "loadavg", "name": "load"})
    assert config.interval == 10.0
    assert LoadAvgConfig.model_validate({**config.model_dump(), "interval": "2m"}).interval == 120
    assert config.key.mid == "{host_id}"
    assert config.payload.codec_settings() == {"format": "<d", "fields": ["load"]}


def test_config_rejects_unknown_keys_and_bad_interval():
    with pytest.raises(ValidationError) as info:
        LoadAvgConfig.model_validate(
            {"type": "loadavg", "name": "load", "interval": 0, "intervall": 5}
        )
    assert {error["loc"] for error in info.value.errors()} == {("interval",), ("intervall",)}


def test_plugin_contributes_the_loadavg_source_type():
    (source_type,) = tstoraged_source_types()
    assert isinstance(source_type, SourceType)
    assert source_type.name == "loadavg"
    assert source_type.source_class is LoadAvgSource
    assert source_type.config_model is LoadAvgConfig


TOKEN_URL = "https://grafana.example/d/load?auth=tok-7d1f0a9c"  # noqa: S105 - a test value


def test_a_sensitive_setting_is_validated_but_never_shown(tmp_path):
    from tstoraged.config import ConfigError, load_config, render_config
    from tstoraged.plugins import PluginManager

    plugins = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,loadavg"})
    config = tmp_path / "t.toml"
    source = f'[[sources]]\ntype = "loadavg"\nname = "load"\ndashboard_url = "{TOKEN_URL}"\n'
    config.write_text(source)
    settings = load_config(config, env={}, plugins=plugins)
    assert str(settings.sources[0].dashboard_url) == TOKEN_URL  # the code sees the value
    for output_format in ("toml", "json"):
        assert TOKEN_URL not in render_config(settings, output_format)
        assert "**********" in render_config(settings, output_format)

    config.write_text(source.replace("https://", "ftp:/"))  # still validated as a URL
    with pytest.raises(ConfigError) as error:
        load_config(config, env={}, plugins=plugins)
    assert "sources[0].dashboard_url = '**********'" in str(error.value)
    assert "tok-7d1f0a9c" not in str(error.value)


async def test_the_sensitive_setting_is_masked_in_the_log_line_that_shows_it(tmp_path):
    import io

    from tstoraged.config import load_config
    from tstoraged.observe.logging import configure_logging
    from tstoraged.plugins import PluginManager

    path = tmp_path / "loadavg"
    path.write_text(LINE)
    plugins = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,loadavg"})
    config = tmp_path / "t.toml"
    config.write_text(
        f'[[sources]]\ntype = "loadavg"\nname = "load"\npath = "{path}"\n'
        f'dashboard_url = "{TOKEN_URL}"\n'
    )
    settings = load_config(config, env={}, plugins=plugins)  # loading remembers the value
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    source = LoadAvgSource(settings.sources[0], RecordingContext(settings.sources[0], tmp_path))
    await source.setup()  # logs the start line, with the dashboard URL
    assert "tok-7d1f0a9c" not in out.getvalue()
    assert '"dashboard": "**********"' in out.getvalue()
