"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tstoraged.config import ConfigProblem, Settings
    from tstoraged.plugins import PluginManager


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``-c/--config FILE`` (default: ``$TSTORAGED_CONFIG``, else /etc/tstoraged/tstoraged.toml)."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $TSTORAGED_CONFIG, else /etc/tstoraged/tstoraged.toml)",
    )


def print_problems(problems: Iterable[ConfigProblem | str]) -> None:
    """One line per problem on stderr."""
    for problem in problems:
        print(problem, file=sys.stderr)


def load_settings(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> tuple[Settings, PluginManager]:
    """Load plugins and the config named by ``args.config``; raises ConfigError."""
    from tstoraged.config import config_path, load_config
    from tstoraged.plugins import PluginManager

    env = os.environ if env is None else env
    plugins = PluginManager.from_entry_points(env)
    settings = load_config(config_path(args.config, env), env=env, plugins=plugins)
    return settings, plugins
