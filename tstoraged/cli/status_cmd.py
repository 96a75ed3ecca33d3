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
    """The endpoint of the config's ``[metrics] listen``; the default without a config file.

    A config that does not load is reported (``ConfigError``: one line per problem, exit 2),
    not replaced by the default URL, which may be another daemon's or nobody's.
    """
    from tstoraged.cli._common import load_settings
    from tstoraged.config import config_path
    from tstoraged.status_view import DEFAULT_URL, status_url_from_listen

    if args.config is None and not config_path(None, os.environ).exists():
        return DEFAULT_URL
    settings, _ = load_settings(args)
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
