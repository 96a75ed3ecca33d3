"""Secrets: from the file, a secret file or systemd credentials; masked everywhere they show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
import test_plugins_support as support

from tstoraged.config import ConfigError, load_config, render_config
from tstoraged.plugins import PluginManager

SECRET = "hunter2-very-secret"


@pytest.fixture
def plugins() -> PluginManager:
    return support.registered_plugins()


write = support.write_config


def config_error(path: Path, plugins: PluginManager) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=plugins)
    return str(info.value)


def tls_config(tmp_path: Path, password_line: str) -> Path:
    return write(
        tmp_path,
        f"""
        [tstorage.tls]
        cert_file = "/c.pem"
        key_file = "/k.pem"
        {password_line}
        """,
    )


def test_literal_secret_is_readable_by_the_code_but_masked_in_repr(tmp_path, plugins):
    path = tls_config(tmp_path, f'key_password = "{SECRET}"')
    settings = load_config(path, env={}, plugins=plugins)
    password = settings.tstorage.tls.key_password
    assert password is not None
    assert password.get_secret_value() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_secret_is_masked_in_the_effective_config(tmp_path, plugins):
    path = tls_config(tmp_path, f'key_password = "{SECRET}"')
    settings = load_config(path, env={}, plugins=plugins)
    for output_format in ("toml", "json"):
        text = render_config(settings, output_format)
        assert SECRET not in text
        assert "**********" in text
    assert json.loads(render_config(settings, "json"))["tstorage"]["tls"]["key_password"] == (
        "**********"
    )


def test_secret_is_masked_in_structured_logs(tmp_path, plugins):
    path = tls_config(tmp_path, f'key_password = "{SECRET}"')
    settings = load_config(path, env={}, plugins=plugins)
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger().info("config.loaded", settings=settings, tls=settings.tstorage.tls)
    assert logs
    assert SECRET not in repr(logs)


def test_secret_from_a_file_drops_the_trailing_newline(tmp_path, plugins):
    secret_file = tmp_path / "tls.pass"
    secret_file.write_text(SECRET + "\n")
    path = tls_config(tmp_path, f'key_password = {{ file = "{secret_file}" }}')
    settings = load_config(path, env={}, plugins=plugins)
    assert settings.tstorage.tls.key_password.get_secret_value() == SECRET


def test_secret_from_a_sibling_file_key(tmp_path, plugins):
    secret_file = tmp_path / "tls.pass"
    secret_file.write_text(SECRET)
    path = tls_config(tmp_path, f'key_password_file = "{secret_file}"')
    settings = load_config(path, env={}, plugins=plugins)
    assert settings.tstorage.tls.key_password.get_secret_value() == SECRET
    assert "key_password_file" not in render_config(settings)


def test_secret_and_sibling_file_together_are_refused(tmp_path, plugins):
    path = tls_config(tmp_path, 'key_password = "a"\nkey_password_file = "/b"')
    assert config_error(path, plugins) == (
        f"{path}: tstorage.tls: set either key_password or key_password_file, not both"
    )


def test_environment_sibling_file_beats_the_literal_in_the_file(tmp_path, plugins):
    secret_file = tmp_path / "tls.pass"
    secret_file.write_text(SECRET)
    path = tls_config(tmp_path, 'key_password = "from-the-file"')
    env = {"TSTORAGED_TSTORAGE__TLS__KEY_PASSWORD_FILE": str(secret_file)}
    settings = load_config(path, env=env, plugins=plugins)
    assert settings.tstorage.tls.key_password.get_secret_value() == SECRET


def test_secret_from_systemd_credentials_directory(tmp_path, plugins):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "tls-pass").write_text(SECRET)
    path = tls_config(tmp_path, 'key_password = { credential = "tls-pass" }')
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    settings = load_config(path, env=env, plugins=plugins)
    assert settings.tstorage.tls.key_password.get_secret_value() == SECRET


def test_credential_outside_systemd_says_how_to_provide_it(tmp_path, plugins):
    path = tls_config(tmp_path, 'key_password = { credential = "tls-pass" }')
    assert config_error(path, plugins) == (
        f"{path}: tstorage.tls.key_password: credential 'tls-pass' needs $CREDENTIALS_DIRECTORY, "
        "which is set only under systemd (add LoadCredential= or SetCredential= to the unit)"
    )


def test_unreadable_secret_file_names_the_file(tmp_path, plugins):
    path = tls_config(tmp_path, 'key_password = { file = "/nonexistent/pass" }')
    assert config_error(path, plugins) == (
        f"{path}: tstorage.tls.key_password: cannot read secret file '/nonexistent/pass': "
        "No such file or directory"
    )


def topics_source(name: str, *extra_lines: str) -> str:
    """A ``[[sources]]`` table of the test plugin's ``topics`` type with extra lines."""
    lines = [
        "[[sources]]",
        'type = "topics"',
        f'name = "{name}"',
        'topics = ["t"]',
        *extra_lines,
        "key = { cid = 1, mid = 2, moid = 3 }",
        'payload = { codec = "fixed", format = "<d", fields = ["v"] }',
    ]
    return "\n".join(lines) + "\n"


def test_plugin_source_secrets_use_the_same_type_and_are_masked_in_errors(tmp_path, plugins):
    path = write(
        tmp_path,
        topics_source("a", f'password = {{ credential = "../{SECRET}" }}')
        + topics_source("b", "password = 12345", f'qos = "{SECRET}"'),
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=plugins)
    lines = sorted(str(info.value).splitlines())
    assert len(lines) == 3
    assert lines[0].startswith(f"{path}: sources[0].password: expected a string, ")
    assert lines[1].startswith(f"{path}: sources[1].password = '**********': expected a string")
    assert "12345" not in str(info.value)
    assert lines[2].startswith(f"{path}: sources[1].qos = '{SECRET}'")  # not a secret field


def test_plugin_source_secret_from_a_file(tmp_path, plugins):
    secret_file = tmp_path / "mqtt.pass"
    secret_file.write_text(SECRET)
    path = write(tmp_path, topics_source("a", f'password = {{ file = "{secret_file}" }}'))
    settings = load_config(path, env={}, plugins=plugins)
    assert settings.sources[0].password.get_secret_value() == SECRET
    assert SECRET not in render_config(settings)
