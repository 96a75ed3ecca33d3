"""``tstoraged check``: validate the config and the plugins, print the effective config."""

from __future__ import annotations

import argparse
import sys

from tstoraged.cli import EXIT_OK, Subcommand
from tstoraged.cli._common import add_config_argument, load_settings


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument(
        "--format",
        choices=("toml", "json"),
        default="toml",
        help="how to print the effective config (default: toml)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing when the config is valid"
    )


def _run(args: argparse.Namespace) -> int:
    from tstoraged.config import render_config

    settings, plugins = load_settings(args)
    used = {source.type for source in settings.sources}
    for info in plugins.unavailable.values():
        # Unused unavailable plugins do not stop the daemon; say so without failing.
        if info.name not in used:
            print(f"warning: plugin {info.name!r} is unavailable: {info.reason}", file=sys.stderr)
    spool = settings.spool
    if spool.enabled and spool.dir is not None:
        from tstoraged.spool import spool_fit

        fit = spool_fit(spool.dir, max_size=spool.max_size, min_free_space=spool.min_free_space)
        for problem in fit.problems:
            print(f"warning: [spool] {problem}", file=sys.stderr)
    if not args.quiet:
        sys.stdout.write(render_config(settings, args.format))
    return EXIT_OK


COMMAND = Subcommand(
    name="check",
    help="validate the config and plugins; print the effective config (secrets masked)",
    description=(
        "Validate the config file, environment overrides and plugins. Prints the effective "
        "config with secrets masked and exits 0, or prints one line per problem and exits 2."
    ),
    add_arguments=_add_arguments,
    run=_run,
)
