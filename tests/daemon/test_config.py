"""load_config: file + environment + plugin models in one pass, with one precise line per error."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import test_plugins_support as support
from pydantic import BaseModel

from tstoraged.config import ConfigError, Settings, config_path, load_config, render_config
from tstoraged.plugins import PluginManager

SOURCE = """
[[sources]]
type = "topics"
name = "line-3"
topics = ["plant/+/power"]
key = { cid = 7, mid = "{meter}", moid = 1 }
payload = { codec = "fixed", format = "<d", fields = ["value"] }
"""


@pytest.fixture
def plugins() -> PluginManager:
    return support.registered_plugins()


write = support.write_config


def error_lines(path: Path | None, plugins: PluginManager, env: dict[str, str] | None = None):
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, plugins=plugins)
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return str(info.value).splitlines()


def test_an_empty_file_gives_the_documented_defaults(tmp_path, plugins):
    settings = load_config(write(tmp_path, ""), env={}, plugins=plugins)
    assert settings.tstorage.host == "127.0.0.1"
    assert settings.tstorage.port == 2025
    assert settings.tstorage.write_mode == "put"
    assert settings.batch.max_batch_size == 4 * 2**20
    assert settings.batch.max_records == 10_000
    assert settings.batch.flush_interval == 1.0
    assert settings.metrics.listen == "127.0.0.1:9108"
    assert settings.daemon.state_dir == Path("/var/lib/tstoraged")
    assert settings.daemon.drain_timeout == 30.0
    assert settings.spool.dir == Path("/var/lib/tstoraged/spool")
    assert settings.retry.give_up == "never"
    assert settings.sources == ()


def test_values_in_human_units_are_read_from_the_file(tmp_path, plugins):
    path = write(
        tmp_path,
        """
        [tstorage]
        host = "ts.example"
        port = 2026
        timeout = "2s"
        write_mode = "puta"
        [batch]
        max_batch_size = "1MiB"
        flush_interval = "250ms"
        [retry]
        give_up = "1h"
        [spool]
        enabled = true
        max_size = "2GiB"
        """,
    )
    settings = load_config(path, env={}, plugins=plugins)
    assert (settings.tstorage.host, settings.tstorage.port) == ("ts.example", 2026)
    assert settings.tstorage.timeout == 2.0
    assert settings.tstorage.write_mode == "puta"
    assert settings.batch.max_batch_size == 2**20
    assert settings.batch.flush_interval == 0.25
    assert settings.retry.give_up_after == 3600.0
    assert settings.retry.give_up_attempts is None
    assert settings.spool.max_size == 2 * 2**30


def test_give_up_as_an_attempt_count(tmp_path, plugins):
    settings = load_config(write(tmp_path, "[retry]\ngive_up = 5\n"), env={}, plugins=plugins)
    assert settings.retry.give_up_attempts == 5
    assert settings.retry.give_up_after is None


def test_sources_are_validated_with_their_plugin_model(tmp_path, plugins):
    settings = load_config(write(tmp_path, SOURCE), env={}, plugins=plugins)
    (source,) = settings.sources
    assert isinstance(source, support.TopicsConfig)
    assert source.topics == ["plant/+/power"]
    assert source.payload.codec_settings() == {"format": "<d", "fields": ["value"]}


def test_environment_overrides_the_file(tmp_path, plugins):
    path = write(tmp_path, '[tstorage]\nport = 2025\nhost = "from-file"\n')
    env = {
        "TSTORAGED_TSTORAGE__PORT": "2026",
        "TSTORAGED_BATCH__FLUSH_INTERVAL": "5s",
        "TSTORAGED_TSTORAGE__TLS__ENABLED": "true",
        "TSTORAGED_RETRY__GIVE_UP": "3",
        "TSTORAGED_LOG__LEVEL": "DEBUG",
    }
    settings = load_config(path, env=env, plugins=plugins)
    assert settings.tstorage.port == 2026
    assert settings.tstorage.host == "from-file"
    assert settings.batch.flush_interval == 5.0
    assert settings.tstorage.tls.enabled is True
    assert settings.retry.give_up_attempts == 3
    assert settings.log.level == "debug"


def test_environment_names_are_case_insensitive_and_reserved_ones_ignored(plugins):
    env = {
        "tstoraged_metrics__enabled": "false",
        "TSTORAGED_CONFIG": "/elsewhere.toml",
        "TSTORAGED_LOAD_PLUGINS": "",
    }
    settings = load_config(None, env=env, plugins=plugins)
    assert settings.metrics.enabled is False


def test_state_dir_follows_systemd_state_directory(plugins):
    settings = load_config(None, env={"STATE_DIRECTORY": "/var/lib/x:/var/lib/y"}, plugins=plugins)
    assert settings.daemon.state_dir == Path("/var/lib/x")
    assert settings.spool.dir == Path("/var/lib/x/spool")
    assert settings.daemon.dead_letter.file == Path("/var/lib/x/dead-letter.jsonl")


def test_explicit_state_dir_moves_the_derived_paths(tmp_path, plugins):
    path = write(tmp_path, f'[daemon]\nstate_dir = "{tmp_path}"\n[spool]\ndir = "/spool"\n')
    settings = load_config(path, env={"STATE_DIRECTORY": "/ignored"}, plugins=plugins)
    assert settings.daemon.state_dir == tmp_path
    assert settings.daemon.dead_letter.file == tmp_path / "dead-letter.jsonl"
    assert settings.spool.dir == Path("/spool")


def test_config_path_prefers_option_then_environment_then_default():
    assert config_path("a.toml", {"TSTORAGED_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path(None, {"TSTORAGED_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path(None, {}) == Path("/etc/tstoraged/tstoraged.toml")


def test_unknown_keys_are_errors_with_a_suggestion(tmp_path, plugins):
    path = write(tmp_path, "[tstorage]\nprot = 2026\n[batchh]\nmax_records = 1\n")
    assert error_lines(path, plugins) == [
        f"{path}: tstorage.prot = 2026: unknown key 'prot' (did you mean 'port'?)",
        f"{path}: batchh: unknown key 'batchh' (did you mean 'batch'?)",
    ]


ONE_MISTAKE = {
    "unknown key, no close match: the allowed keys": (
        "[metrics]\nzzz = 1\n",
        "metrics.zzz = 1: unknown key 'zzz' (allowed: enabled, listen)",
    ),
    "unknown source type: the known ones": (
        '[[sources]]\ntype = "mqt"\nname = "a"\n',
        "sources[0].type = 'mqt': unknown source type (known: topics)",
    ),
    "source without a type": (
        '[[sources]]\nname = "a"\n',
        "sources[0].type: missing required key (source types: topics)",
    ),
    "unknown codec: the known ones": (
        SOURCE.replace('codec = "fixed"', 'codec = "jsn"'),
        "sources[0].payload.codec = 'jsn': unknown payload codec (known: fixed)",
    ),
    "a typo inside a table that could also be an int or a string": (
        SOURCE.replace("moid = 1 }", 'moid = { field = "ch", defualt = 1 } }'),
        "sources[0].key.moid.defualt = 1: unknown key 'defualt' (did you mean 'default'?)",
    ),
    "duplicate source names": (
        SOURCE + SOURCE,
        "sources[1].name = 'line-3': duplicate source name (also sources[0].name)",
    ),
    "sources not an array of tables": (
        'sources = "none"\n',
        "sources: expected an array of tables ([[sources]])",
    ),
    "TLS key without certificate": (
        '[tstorage.tls]\nkey_file = "/k.pem"\n',
        "tstorage.tls: key_file is set but cert_file is not",
    ),
    "backoffs in the wrong order": (
        '[retry]\ninitial_backoff = "1m"\nmax_backoff = "1s"\n',
        "retry: max_backoff is smaller than initial_backoff",
    ),
}


@pytest.mark.parametrize(("text", "expected"), ONE_MISTAKE.values(), ids=ONE_MISTAKE.keys())
def test_one_mistake_gives_one_precise_line(tmp_path, plugins, text, expected):
    path = write(tmp_path, text)
    assert error_lines(path, plugins) == [f"{path}: {expected}"]


def test_every_error_is_reported_at_once_with_its_key_path(tmp_path, plugins):
    path = write(
        tmp_path,
        """
        [tstorage]
        port = 70000
        write_mode = "append"
        [batch]
        max_batch_size = "3GiB"
        flush_interval = "1 sec"
        [retry]
        give_up = "soon"
        """
        + SOURCE
        + """
        [[sources]]
        type = "topics"
        name = "line-4"
        topics = ["ok", 7]
        qos = 3
        key = { cid = 1, mid = 2, moid = 3 }
        payload = { codec = "fixed", format = "<iz", fields = ["a"] }
        """,
    )
    assert error_lines(path, plugins) == [
        f"{path}: tstorage.port = 70000: expected less than or equal to 65535",
        f"{path}: tstorage.write_mode = 'append': expected 'put' or 'puta'",
        f"{path}: batch.max_batch_size = '3GiB': expected less than 2GiB",
        f"{path}: batch.flush_interval = '1 sec': expected a duration like '500ms', '30s', "
        "'5m', '1h' or a number of seconds",
        f"{path}: retry.give_up = 'soon': expected \"never\", a number of attempts (e.g. 5) "
        'or a duration (e.g. "1h")',
        f"{path}: sources[1].topics[1] = 7: expected a valid string",
        f"{path}: sources[1].qos = 3: expected less than or equal to 2",
        f"{path}: sources[1].payload.format: bad struct format '<iz' "
        "(struct.error: bad char in struct format)",
    ]


def test_source_without_required_keys(tmp_path, plugins):
    path = write(tmp_path, '[[sources]]\ntype = "topics"\nname = "a"\n')
    lines = error_lines(path, plugins)
    assert f"{path}: sources[0].topics: missing required key" in lines
    assert f"{path}: sources[0].key: missing required key" in lines
    assert f"{path}: sources[0].payload: missing required key" in lines


def test_codec_keys_are_validated_by_the_codec_model(tmp_path, plugins):
    path = write(tmp_path, SOURCE.replace('fields = ["value"]', "fields = [], width = 3"))
    assert error_lines(path, plugins) == [
        f"{path}: sources[0].payload.fields: List should have at least 1 item after "
        "validation, not 0",
        f"{path}: sources[0].payload.width = 3: unknown key 'width' (allowed: format, fields)",
    ]


def test_toml_syntax_errors_give_line_and_column(tmp_path, plugins):
    path = write(tmp_path, '[tstorage]\nhost = "a"\nport = = 1\n')
    (line,) = error_lines(path, plugins)
    assert line.startswith(f"{path}: TOML syntax error at line 3, column 8: ")


def test_missing_file_is_one_clear_error(tmp_path, plugins):
    path = tmp_path / "absent.toml"
    assert error_lines(path, plugins) == [
        f"{path}: config file not found (give -c FILE or set $TSTORAGED_CONFIG)"
    ]


def test_environment_errors_name_the_variable(tmp_path, plugins):
    path = write(tmp_path, "[tstorage]\nport = 2025\n")
    env = {
        "TSTORAGED_TSTORAGE__PORT": "x2026",
        "TSTORAGED_TSTORAGE__PROT": "1",
        "TSTORAGED_BATH__MAX_RECORDS": "5",
    }
    assert error_lines(path, plugins, env) == [
        "environment TSTORAGED_BATH__MAX_RECORDS: unknown setting: no section 'bath' "
        "(did you mean TSTORAGED_BATCH...?)",
        "environment TSTORAGED_TSTORAGE__PORT: tstorage.port = 'x2026': expected a valid "
        "integer, unable to parse string as an integer",
        "environment TSTORAGED_TSTORAGE__PROT: tstorage.prot = '1': unknown key 'prot' "
        "(did you mean 'port'?)",
    ]


def test_environment_value_that_must_be_json(plugins):
    lines = error_lines(None, plugins, {"TSTORAGED_SOURCES": "[{"})
    assert lines == ["environment TSTORAGED_SOURCES: sources: expected JSON (an array or a table)"]


def test_long_bad_values_are_truncated(tmp_path, plugins):
    path = write(tmp_path, f'[tstorage]\nwrite_mode = "{"x" * 200}"\n')
    (line,) = error_lines(path, plugins)
    assert "x" * 200 not in line
    assert "…" in line


def test_plugin_name_clash_is_a_config_error(tmp_path, plugins):
    plugins.register(support.TopicsAgain(), "again")
    lines = error_lines(None, plugins)
    assert lines == [
        "plugins: source type 'topics' is contributed by both plugin 'test' and plugin 'again'"
    ]


def test_effective_config_round_trips_through_toml(tmp_path, plugins):
    settings = load_config(write(tmp_path, SOURCE), env={}, plugins=plugins)
    text = render_config(settings, "toml")
    again = load_config(write(tmp_path, text), env={}, plugins=plugins)
    assert again == settings
    assert tomllib.loads(text)["batch"]["max_batch_size"] == "4MiB"


def test_settings_are_immutable(plugins):
    settings = load_config(None, env={}, plugins=plugins)
    with pytest.raises(ValueError, match="frozen"):
        settings.tstorage.port = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)


def test_mapping_problems_found_only_by_compiling_are_reported(tmp_path, plugins):
    path = write(
        tmp_path,
        SOURCE.replace("moid = 1 }", 'moid = { field = "ch", lookup = "channels" } }').replace(
            "cid = 7", "cid = -1"
        ),
    )
    lines = error_lines(path, plugins)
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: sources[0].key.cid: ")
    assert "-1: cid must be" in lines[0]
    assert lines[1].startswith(f"{path}: sources[0].key.moid.lookup: ")
    assert "channels" in lines[1]


REFERENCE = Path(__file__).resolve().parents[2] / "config" / "tstoraged.toml"
CONFIGURATION_DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _setting_paths(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str]]:
    """(section, key) of every setting, descending into nested sections."""
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _setting_paths(annotation, f"{prefix}{name}.")
        elif name != "sources":
            paths.append((prefix.rstrip("."), name))
    return paths


def test_reference_config_is_valid_with_the_builtin_plugins():
    builtins = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,generator,files"})
    settings = load_config(REFERENCE, env={}, plugins=builtins)
    assert {source.type for source in settings.sources} == {"generator", "files"}


def test_reference_config_shows_the_defaults(plugins):
    reference = tomllib.loads(REFERENCE.read_text())
    del reference["sources"]
    assert load_config(None, env={}, plugins=plugins) == Settings.model_validate(
        reference, context={"env": {}}
    )


@pytest.mark.parametrize("document", [REFERENCE, CONFIGURATION_DOC], ids=["reference", "docs"])
def test_every_setting_is_documented(document):
    text = document.read_text()
    missing = [
        f"{section}.{key}"
        for section, key in _setting_paths(Settings)
        if f"[{section}]" not in text or not re.search(rf"(^|[#`\s]){key}\b", text, re.M)
    ]
    assert missing == []


def test_sources_can_be_replaced_from_the_environment_as_json(tmp_path, plugins):
    source = {
        "type": "topics",
        "name": "from-env",
        "topics": ["a", 1],
        "key": {"cid": 1, "mid": 2, "moid": 3},
        "payload": {"codec": "fixed", "format": "<d", "fields": ["v"]},
    }
    env = {"TSTORAGED_SOURCES": json.dumps([source])}
    assert error_lines(write(tmp_path, SOURCE), plugins, env) == [
        "environment TSTORAGED_SOURCES: sources[0].topics[1] = 1: expected a valid string"
    ]
    source["topics"] = ["a"]
    env = {"TSTORAGED_SOURCES": json.dumps([source])}
    settings = load_config(write(tmp_path, SOURCE), env=env, plugins=plugins)
    assert [s.name for s in settings.sources] == ["from-env"]


def test_tls_files_must_exist_when_tls_is_enabled(tmp_path, plugins):
    (tmp_path / "ca.pem").write_text("ca")
    text = f'[tstorage.tls]\nca_file = "{tmp_path}/ca.pem"\ncert_file = "{tmp_path}/nope.pem"\n'
    assert load_config(write(tmp_path, text), env={}, plugins=plugins).tstorage.tls.enabled is False
    path = write(tmp_path, "[tstorage.tls]\nenabled = true\n" + text.split("\n", 1)[1])
    (line,) = error_lines(path, plugins)
    assert line.startswith(f"{path}: tstorage.tls.cert_file = '/")
    assert line.endswith("/nope.pem': no such file (needed because tls.enabled = true)")


def test_a_spool_too_small_for_the_batches_is_refused_at_its_key(tmp_path, plugins):
    path = tmp_path / "t.toml"
    path.write_text(
        '[batch]\nmax_batch_size = "1MiB"\n[spool]\nenabled = true\nmax_size = "3MiB"\n'
    )
    lines = error_lines(path, plugins)
    assert len(lines) == 1
    assert "spool.max_size = 3MiB" in lines[0]
    assert "at least 4MiB" in lines[0]
    path.write_text(
        '[batch]\nmax_batch_size = "1MiB"\n[spool]\nenabled = true\nmax_size = "4MiB"\n'
    )
    assert load_config(path, env={}, plugins=plugins).spool.max_size == 4 * 2**20
