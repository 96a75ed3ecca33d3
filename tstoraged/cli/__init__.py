"""The ``tstoraged`` command line: ``tstoraged [--version] <command> [options]``.

Each subcommand lives in its own module under :mod:`tstoraged.cli` and exposes
``COMMAND = Subcommand(...)``. Registering one is one line in :data:`SUBCOMMAND_MODULES`.
Modules keep heavy imports inside their ``run`` so that ``--help`` and ``--version`` are quick.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tstoraged import __version__

__all__ = [
    "SUBCOMMAND_MODULES",
    "Subcommand",
    "build_parser",
    "builtin_command_names",
    "main",
    "plain_text",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG_ERROR = 2  # also argparse's exit status for bad usage


@dataclass(frozen=True)
class Subcommand:
    """One ``tstoraged <name>`` command."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    """Adds the command's options to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Runs the command; returns the exit status."""
    description: str | None = None


SUBCOMMAND_MODULES: tuple[str, ...] = (
    "tstoraged.cli.run_cmd",
    "tstoraged.cli.demo_cmd",
    "tstoraged.cli.status_cmd",
    "tstoraged.cli.import_cmd",
    "tstoraged.cli.deadletters_cmd",
    "tstoraged.cli.check",
    "tstoraged.cli.plugins_cmd",
    "tstoraged.cli.sample_config_cmd",
)
"""Modules defining ``COMMAND``; one line each, in the order ``--help`` lists them."""


def _subcommands() -> list[Subcommand]:
    return [importlib.import_module(module).COMMAND for module in SUBCOMMAND_MODULES]


def builtin_command_names() -> frozenset[str]:
    """Names of the built-in commands (a plugin cannot take them)."""
    return frozenset(command.name for command in _subcommands())


def _plugin_subcommands() -> list[Subcommand]:
    """Commands contributed by plugins (``tstoraged_commands``), after the built-in ones."""
    from tstoraged.plugins import PluginManager

    return list(PluginManager.from_entry_points().commands.values())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="tstoraged", description="TStorage ingestion daemon for gateways."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"tstoraged {__version__} (Python {platform.python_version()})",
    )
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in [*_subcommands(), *_plugin_subcommands()]:
        sub = commands.add_parser(
            command.name,
            help=plain_text(command.help),
            description=plain_text(command.description or command.help),
            # Descriptions are docstrings: keep their paragraphs.
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(_run=command.run)
    return parser


_LITERAL = re.compile(r"``(.+?)``|`([^`]+)`")


def plain_text(text: str) -> str:
    """Docstring text for a terminal: reST/Markdown literals lose their backticks."""
    return _LITERAL.sub(lambda match: match.group(1) or match.group(2), text)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tstoraged`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    from tstoraged.cli._common import print_problems
    from tstoraged.config.errors import ConfigError

    try:
        status: int = args._run(args)
    except ConfigError as exc:
        # Any command that reads the config: one line per problem, exit 2.
        print_problems(exc.problems)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `tstoraged plugins | head`: the reader went away; that is not an error.
        sys.stderr.close()
        return EXIT_OK
    return status
