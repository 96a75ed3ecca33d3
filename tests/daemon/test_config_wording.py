"""Config errors speak the operator's units and words, not pydantic's."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_plugins_support as support
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from tstoraged.config import ConfigError, load_config
from tstoraged.config.errors import problems_from_validation_error
from tstoraged.plugins import PluginManager


def error_of(tmp_path: Path, text: str, plugins: PluginManager | None = None) -> str:
    path = support.write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=plugins or support.registered_plugins())
    (problem,) = info.value.problems
    return str(problem).removeprefix(f"{path}: ")


@pytest.mark.parametrize("listen", ["localhost", "9108", "127.0.0.1:http", "h:99999", "a b:1"])
def test_metrics_listen_explains_host_and_port(tmp_path: Path, listen: str) -> None:
    message = error_of(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    assert message.startswith(f'metrics.listen = {listen!r}: expected "HOST:PORT"')
    assert '"127.0.0.1:9108"' in message
    assert "pattern" not in message
    assert "\\d" not in message


def test_an_ipv6_listen_address_without_brackets_says_how(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[metrics]\nlisten = "::1:9108"\n')
    assert (
        message
        == "metrics.listen = '::1:9108': an IPv6 address goes in brackets, e.g. \"[::1]:9108\""
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:9108", "[::1]:0", ":9108", "0.0.0.0:65535"])
def test_valid_listen_addresses_pass(tmp_path: Path, listen: str) -> None:
    path = support.write_config(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    assert load_config(path, env={}, plugins=support.registered_plugins()).metrics.listen == listen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[batch]\nmax_batch_size = "3GiB"\n',
            "batch.max_batch_size = '3GiB': expected less than 2GiB",
        ),
        ('[queue]\nmax_bytes = "0MiB"\n', "queue.max_bytes = '0MiB': expected greater than 0"),
        (
            '[batch]\nflush_interval = "0s"\n',
            "batch.flush_interval = '0s': expected greater than 0s",
        ),
    ],
)
def test_sizes_and_durations_are_shown_as_written_with_limits_in_units(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert error_of(tmp_path, text) == expected


def test_an_environment_size_is_shown_as_written(tmp_path: Path) -> None:
    path = support.write_config(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_config(
            path,
            env={"TSTORAGED_BATCH__MAX_BATCH_SIZE": "4GiB"},
            plugins=support.registered_plugins(),
        )
    assert "batch.max_batch_size = '4GiB': expected less than 2GiB" in str(info.value)


def test_an_unknown_source_type_gets_a_did_you_mean(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[[sources]]\ntype = "topic"\nname = "a"\n')
    assert (
        message
        == "sources[0].type = 'topic': unknown source type; did you mean 'topics'? (known: topics)"
    )


def test_an_unknown_codec_gets_a_did_you_mean(tmp_path: Path) -> None:
    text = (
        '[[sources]]\ntype = "topics"\nname = "a"\ntopics = ["t"]\n'
        "key = { cid = 1, mid = 2, moid = 3 }\n"
        'payload = { codec = "fixd", format = "<d", fields = ["v"] }\n'
    )
    assert error_of(tmp_path, text) == (
        "sources[0].payload.codec = 'fixd': unknown payload codec; did you mean 'fixed'? "
        "(known: fixed)"
    )


def test_the_built_in_types_are_suggested(tmp_path: Path) -> None:
    plugins = PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,generator,files"})
    message = error_of(tmp_path, '[[sources]]\ntype = "filez"\nname = "a"\n', plugins)
    assert "unknown source type; did you mean 'files'?" in message


def test_a_bad_source_name_states_the_rule_not_a_regex(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        '[[sources]]\ntype = "topics"\nname = "line 3!"\ntopics = ["a"]\n'
        'key = { cid = 1, mid = 1, moid = 1 }\npayload = { codec = "fixed", format = "<i", '
        'fields = ["v"] }\n',
    )
    assert message == (
        "sources[0].name = 'line 3!': a name is 1 to 64 letters, digits, '_', '.' or '-', "
        "starting with a letter or digit (it becomes part of file paths and metric labels)"
    )


class Session(BaseModel):
    clean: bool = False
    client: str | None = Field(default=None, validate_default=True)

    @field_validator("client")
    @classmethod
    def _client_for_session(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("clean") is False:
            raise ValueError("required with a persistent session")
        return value


class Broker(BaseModel):
    session: Session


def test_a_check_of_an_absent_keys_default_names_that_key() -> None:
    data = {"session": {}}
    with pytest.raises(ValidationError) as caught:
        Broker.model_validate(data)
    (problem,) = problems_from_validation_error(
        caught.value, model=Broker, data=data, prefix=("sources", 0)
    )
    assert str(problem) == "config: sources[0].session.client: required with a persistent session"
