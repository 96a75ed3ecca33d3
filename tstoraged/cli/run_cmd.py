"""``tstoraged run``: run the daemon in the foreground (as systemd does)."""

from __future__ import annotations

import argparse
import os

from tstoraged.cli import Subcommand
from tstoraged.cli._common import add_config_argument, load_settings


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        help="override [log] level",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        help="override [log] format: json lines, console (readable; colours on a terminal "
        "unless NO_COLOR is set), or auto (console on a terminal, else json)",
    )


def _run(args: argparse.Namespace) -> int:
    from tstoraged.config import config_path
    from tstoraged.runtime.app import run

    settings, plugins = load_settings(args)
    overrides = {"level": args.log_level, "format": args.log_format}
    chosen = {key: value for key, value in overrides.items() if value is not None}
    if chosen:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update=chosen)})
    return run(settings, plugins, config_path=config_path(args.config, os.environ))


COMMAND = Subcommand(
    name="run",
    help="run the daemon in the foreground",
    description=(
        "Run sources and pipeline until SIGTERM/SIGINT (graceful drain, exit 0). "
        "SIGHUP re-reads the config: a valid one is applied, an invalid one refused."
    ),
    add_arguments=_add_arguments,
    run=_run,
)
