"""A planted secret never shows: not in any command's output, not in the daemon's log.

Each test plants a unique marker as a secret (in a known secret key, in a misspelt one, in an
unknown key beside secrets, in a ``TSTORAGED_*`` variable) and greps every channel the value
could leak through: stdout and stderr of the commands, and the daemon's log at start and on a
SIGHUP reload.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import structlog
from pydantic import BaseModel, Field
from test_daemon_process import config_text, generator

from tstorage_server.testing import ServerProcess
from tstoraged.config import ConfigError, load_config, render_config
from tstoraged.config.errors import is_sensitive
from tstoraged.config.model import Settings
from tstoraged.config.sensitive import Sensitive, looks_secret
from tstoraged.observe.logging import configure_logging
from tstoraged.testing import DaemonProcess, NotifySocket


def marker() -> str:
    return f"MARKER-{uuid.uuid4().hex}"


def tstoraged(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def config(tmp_path: Path, tls: str, port: int = 2025) -> Path:
    path = tmp_path / "t.toml"
    source = generator("g", 1, 10)
    path.write_text(config_text(port, tmp_path / "state", source, f"[tstorage.tls]\n{tls}\n"))
    return path


@pytest.mark.parametrize(
    "line",
    [
        'key_passwrd = "{secret}"',  # a typo of the secret key
        'key_pasword = "{secret}"',
        'passphrase = "{secret}"',  # a secret-looking name that is not a setting
        'verifyy = "{secret}"',  # any unknown key in a table that holds a secret
    ],
)
@pytest.mark.parametrize("command", ["check", "run", "status", "import", "dead-letters"])
def test_a_misspelt_secret_key_in_the_file_is_masked_in_every_command(
    tmp_path: Path, line: str, command: str
) -> None:
    secret = marker()
    path = config(tmp_path, line.format(secret=secret))
    args = {
        "check": ["check", "-c", str(path)],
        "run": ["run", "-c", str(path)],
        "status": ["status", "-c", str(path), "--timeout", "0.5"],
        "import": ["import", "-c", str(path), "--format", "records", str(path)],
        "dead-letters": ["dead-letters", "show", "-c", str(path)],
    }[command]
    result = tstoraged(*args)
    assert result.returncode == 2, result.stderr
    key = line.split(" = ")[0]
    assert f"tstorage.tls.{key} = '**********': unknown key" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_secret_in_the_environment_is_masked(tmp_path: Path) -> None:
    secret = marker()
    path = config(tmp_path, "enabled = false")
    env = {"TSTORAGED_TSTORAGE__TLS__KEY_PASSWRD": secret, "TSTORAGED_TSTORAGE__TLS__TOKEN": secret}
    for command in (["check", "-c", str(path)], ["run", "-c", str(path)]):
        result = tstoraged(*command, env=env)
        assert result.returncode == 2
        assert (
            "environment TSTORAGED_TSTORAGE__TLS__KEY_PASSWRD: tstorage.tls.key_passwrd = "
            "'**********'" in result.stderr
        )
        assert "tstorage.tls.token = '**********'" in result.stderr
        assert secret not in result.stdout + result.stderr


def test_check_masks_a_valid_secret_from_the_file_and_the_environment(tmp_path: Path) -> None:
    in_file, in_env = marker(), marker()
    path = config(tmp_path, f'key_password = "{in_file}"')
    for output_format in ("toml", "json"):
        result = tstoraged("check", "-c", str(path), "--format", output_format)
        assert result.returncode == 0, result.stderr
        assert in_file not in result.stdout + result.stderr
        assert "**********" in result.stdout
    result = tstoraged(
        "check", "-c", str(path), env={"TSTORAGED_TSTORAGE__TLS__KEY_PASSWORD": in_env}
    )
    assert result.returncode == 0, result.stderr
    assert in_env not in result.stdout + result.stderr


def test_secrets_never_reach_the_daemon_log_on_start_or_on_a_refused_reload(
    tmp_path: Path,
) -> None:
    at_start, on_reload, in_env = marker(), marker(), marker()
    with ServerProcess() as server:
        path = config(tmp_path, f'key_password = "{at_start}"', port=server.port)
        env = {"TSTORAGED_TSTORAGE__TLS__KEY_PASSWORD": in_env}
        with (
            NotifySocket(tmp_path) as notify,
            DaemonProcess(path, notify=notify, env=env, args=["--log-level", "debug"]) as daemon,
        ):
            ready = notify.wait_for("READY=1")
            path.write_text(
                path.read_text().replace(
                    f'key_password = "{at_start}"', f'key_passwrd = "{on_reload}"'
                )
            )
            daemon.send_signal(signal.SIGHUP)
            notify.wait_for("READY=1", after=notify.wait_for("RELOADING=1", after=ready))
            refused = [
                p
                for event in daemon.wait_for_events("reload_refused", 1)
                for p in event["problems"]
            ]
            assert any("tstorage.tls.key_passwrd = '**********'" in p for p in refused), refused
            assert daemon.terminate() == 0
    log = "\n".join(daemon.lines)
    assert daemon.events("daemon_started")
    for secret in (at_start, on_reload, in_env):
        assert secret not in log


def test_a_value_quoted_by_a_validator_is_masked_in_its_message(tmp_path: Path) -> None:
    secret = marker()

    class Api(BaseModel):
        token: str = Field(pattern=r"^tok-")

    from tstoraged.config.errors import problems_from_validation_error

    data = {"token": secret}
    try:
        Api.model_validate(data)
    except Exception as exc:
        problems = problems_from_validation_error(exc, model=Api, data=data)  # type: ignore[arg-type]
    assert problems
    assert secret not in str(problems[0])
    assert "token = '**********'" in str(problems[0])


def test_names_that_look_secret() -> None:
    secret = [
        "password",
        "key_passwrd",
        "mqtt_password",
        "api_key",
        "apikey",
        "AccessToken",
        "client_secret",
        "secert",
        "credential",
        "passphrase",
        "auth_token",
        "private_key",
    ]
    plain = [
        "key",
        "key_file",
        "key_password_file",
        "host",
        "port",
        "topics",
        "passive",
        "server_hostname",
        "verify",
        "directory",
        "username",
        "mid",
        "moid",
        "lookups",
    ]
    assert [name for name in secret if not looks_secret(name)] == []
    assert [name for name in plain if looks_secret(name)] == []


def test_sensitive_paths_of_the_core_settings() -> None:
    assert is_sensitive(Settings, ("tstorage", "tls", "key_password"))
    assert is_sensitive(Settings, ("tstorage", "tls", "keypass"))  # unknown, beside a secret
    assert not is_sensitive(Settings, ("tstorage", "tls", "ca_file"))
    assert not is_sensitive(Settings, ("batch", "max_recods"))  # unknown, but no secret there


def test_a_field_marked_sensitive_is_masked_in_errors_and_check(tmp_path: Path) -> None:
    from typing import Annotated

    from pydantic import AnyUrl

    from tstoraged.config.errors import problems_from_validation_error

    class Upload(BaseModel):
        url: Annotated[AnyUrl, Sensitive()]
        retries: int = 3

    secret = "https://user:" + marker() + "@host/"
    assert Upload(url=secret).model_dump(mode="json") == {"url": "**********", "retries": 3}
    assert str(Upload(url=secret).url) == secret  # the code sees the value
    data = {"url": secret.replace("https", "ht tps"), "retries": "x"}
    try:
        Upload.model_validate(data)
    except Exception as exc:
        lines = [str(p) for p in problems_from_validation_error(exc, model=Upload, data=data)]  # type: ignore[arg-type]
    assert any(line.startswith("config: url = '**********'") for line in lines)
    assert any("retries = 'x'" in line for line in lines)


def test_remembered_secrets_are_masked_in_any_log_text(tmp_path: Path) -> None:
    secret = marker()
    path = config(tmp_path, f'key_password = "{secret}"')
    load_config(path, env={})
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        raise OSError(f"connect to tls://u:{secret}@db failed")
    except OSError:
        structlog.get_logger("t").exception("connect_failed", detail=f"pw {secret}")
    assert secret not in out.getvalue()
    assert out.getvalue().count("**********") >= 2
    assert "connect_failed" in out.getvalue()


def test_unknown_key_in_a_table_without_secrets_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("[batch]\nmax_recods = 5000\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, env={})
    assert "batch.max_recods = 5000: unknown key" in str(error.value)


def test_effective_config_masks_a_plain_string_under_a_secret_looking_key() -> None:
    from tstoraged import SourceConfig

    class Api(SourceConfig):
        api_token: str  # should have been a Secret; check masks it all the same
        region: str

    secret = marker()
    source = Api.model_validate(
        {
            "type": "api",
            "name": "a",
            "api_token": secret,
            "region": "eu",
            "key": {"cid": 1, "mid": 2, "moid": 3},
            "payload": {"format": "<d", "fields": ["v"]},
        }
    )
    assert "**********" not in render_config(Settings())  # nothing secret, nothing masked
    text = render_config(Settings(sources=(source,)))
    assert secret not in text
    assert 'api_token = "**********"' in text
    assert 'region = "eu"' in text
