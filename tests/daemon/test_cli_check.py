"""``tstoraged check`` and ``tstoraged --version``, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import test_plugins_support as support

from tstoraged import __version__

SECRET = "s3cr3t-passphrase"

VALID = f"""
[tstorage]
host = "ts.example"
port = 2026

[tstorage.tls]
enabled = true
cert_file = "{{tls_dir}}/client.pem"
key_file = "{{tls_dir}}/client.key"
key_password = "{SECRET}"

[batch]
max_batch_size = "1MiB"

[[sources]]
type = "topics"
name = "line-3"
topics = ["plant/+/power"]
key = {{ cid = 7, mid = "{{meter}}", moid = 1 }}
payload = {{ codec = "fixed", format = "<d", fields = ["value"] }}
"""


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """The environment of a process that has the test plugin installed as a distribution."""
    site = tmp_path / "site"
    support.make_distribution(site, "tstoraged-topics", {"topics": support.MODULE})
    return support.cli_environment(site, "topics")


tstoraged = support.run_cli
write = support.write_config


def valid_config(directory: Path) -> Path:
    """VALID, with the TLS files it names created in ``directory``."""
    for name in ("client.pem", "client.key"):
        (directory / name).write_text("not checked before connecting\n")
    return write(directory, VALID.replace("{tls_dir}", str(directory)))


def test_check_prints_the_effective_config_with_secrets_masked(tmp_path, cli_env):
    path = valid_config(tmp_path)
    result = tstoraged("check", "-c", str(path), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    effective = tomllib.loads(result.stdout)
    assert effective["tstorage"]["port"] == 2026
    assert effective["tstorage"]["tls"]["key_password"] == "**********"
    assert effective["batch"]["max_batch_size"] == "1MiB"
    assert effective["batch"]["flush_interval"] == "1s"  # defaults are shown too
    assert effective["sources"][0]["topics"] == ["plant/+/power"]


def test_check_prints_json_on_request(tmp_path, cli_env):
    path = valid_config(tmp_path)
    result = tstoraged("check", "-c", str(path), "--format", "json", env=cli_env)
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["tstorage"]["tls"]["key_password"] == "**********"
    assert effective["sources"][0]["name"] == "line-3"


def test_check_reads_the_config_named_by_the_environment(tmp_path, cli_env):
    path = valid_config(tmp_path)
    cli_env["TSTORAGED_CONFIG"] = str(path)
    cli_env["TSTORAGED_TSTORAGE__PORT"] = "2999"
    result = tstoraged("check", "-q", env=cli_env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    result = tstoraged("check", "--format", "json", env=cli_env)
    assert json.loads(result.stdout)["tstorage"]["port"] == 2999


def test_check_prints_one_line_per_problem_and_exits_2(tmp_path, cli_env):
    path = write(
        tmp_path,
        VALID.replace("port = 2026", "port = 2026\nprot = 1")
        .replace("enabled = true", "enabled = false")
        .replace('topics = ["plant/+/power"]', 'topics = ["plant/+/power", 5]')
        .replace('format = "<d"', 'format = "<iz"'),
    )
    result = tstoraged("check", "-c", str(path), env=cli_env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: tstorage.prot = 1: unknown key 'prot' (did you mean 'port'?)",
        f"{path}: sources[0].topics[1] = 5: expected a valid string",
        f"{path}: sources[0].payload.format: bad struct format '<iz' "
        "(struct.error: bad char in struct format)",
    ]


def test_check_of_a_missing_file_exits_2(tmp_path, cli_env):
    result = tstoraged("check", "-c", str(tmp_path / "nope.toml"), env=cli_env)
    assert result.returncode == 2
    assert result.stderr == (
        f"{tmp_path / 'nope.toml'}: config file not found (give -c FILE or set $TSTORAGED_CONFIG)\n"
    )


def test_check_warns_about_unavailable_plugins_it_does_not_need(tmp_path, cli_env):
    cli_env["TSTORAGED_LOAD_PLUGINS"] = "topics,nosuch"
    result = tstoraged("check", "-q", "-c", str(valid_config(tmp_path)), env=cli_env)
    assert result.returncode == 0
    assert result.stderr == (
        "warning: plugin 'nosuch' is unavailable: not installed: no entry point 'nosuch' "
        "in group 'tstoraged'\n"
    )


def test_version_from_the_console_script(cli_env):
    script = Path(sys.executable).with_name("tstoraged")
    result = subprocess.run(
        [str(script), "--version"], env=cli_env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout.startswith(f"tstoraged {__version__} (Python ")


def test_usage_errors_exit_2(cli_env):
    result = tstoraged("check", "--format", "yaml", env=cli_env)
    assert result.returncode == 2
    assert "invalid choice: 'yaml'" in result.stderr
