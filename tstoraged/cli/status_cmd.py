"""``tstoraged status``: ask a running daemon what flows, per source."""

from __future__ import annotations

import argparse
import os

from tstoraged.cli import Subcommand
from tstoraged.cli._common import add_config_argument


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from tstoraged.status_view import add_status_arguments

    add_config_argument(parser)
    add_status_arguments(parser)


def _default_url(args: argparse.Namespace) -> str:
    """The endpoint of the config's ``[metrics] listen``, if the config can be read."""
    from tstoraged.config import ConfigError, config_path, load_config
    from tstoraged.status_view import DEFAULT_URL, status_url_from_listen

    path = config_path(args.config, os.environ)
    if args.config is None and not path.exists():
        return DEFAULT_URL
    try:
        settings = load_config(path)
    except ConfigError:
        return DEFAULT_URL
    return status_url_from_listen(settings.metrics.listen)


def _run(args: argparse.Namespace) -> int:
    from tstoraged.status_view import status_command

    default = _default_url(args) if args.url is None else args.url
    return status_command(args, default_url=default)


COMMAND = Subcommand(
    name="status",
    help="show a running daemon's per-source throughput, errors, queue and connection",
    add_arguments=_add_arguments,
    run=_run,
)
