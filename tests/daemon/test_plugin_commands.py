"""Plugins contribute ``tstoraged <command>`` subcommands through ``tstoraged_commands``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import test_plugins_support as support

COMMAND_PLUGIN = textwrap.dedent(
    """
    from tstoraged import hookimpl
    from tstoraged.cli import Subcommand


    def _arguments(parser):
        parser.add_argument("--name", required=True)


    def _run(args):
        print(f"hello {args.name}")
        return 3


    @hookimpl
    def tstoraged_commands():
        return [
            Subcommand("hello", "greet someone", _arguments, _run),
            Subcommand("run", "tries to replace the built-in run", _arguments, _run),
        ]
    """
)


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    support.make_distribution(
        tmp_path,
        "tstoraged-hello",
        {"hello": "hello_plugin"},
        modules={"hello_plugin": COMMAND_PLUGIN},
    )
    return support.cli_environment(tmp_path, "hello")


def test_a_plugin_command_runs_with_its_own_options_and_exit_status(cli_env) -> None:
    result = support.run_cli("hello", "--name", "meter", env=cli_env)
    assert (result.returncode, result.stdout) == (3, "hello meter\n")
    listing = support.run_cli("--help", env=cli_env)
    assert "greet someone" in listing.stdout


def test_a_plugin_cannot_take_a_built_in_command_name(cli_env) -> None:
    result = support.run_cli("plugins", "--json", env=cli_env)
    document = json.loads(result.stdout)
    assert document["problems"] == ["plugin 'hello': command 'run' is a built-in command"]
    (plugin,) = document["plugins"]
    assert plugin["commands"] == ["hello"]
    assert result.returncode == 1
    # The built-in command is untouched.
    run_help = support.run_cli("run", "--help", env=cli_env)
    assert "--name" not in run_help.stdout
    assert "-c" in run_help.stdout
