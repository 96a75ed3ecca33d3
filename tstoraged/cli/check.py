"""``tstoraged check``: validate the config and plugins, check the machine, print the config."""

from __future__ import annotations

import argparse
import sys

from tstoraged.cli import EXIT_FAILURE, EXIT_OK, Subcommand
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
        "-q", "--quiet", action="store_true", help="print nothing when everything is fine"
    )
    parser.add_argument(
        "--connect",
        action="store_true",
        help="also connect to TStorage (TLS included) and ask it for a GET_ACQ",
    )
    parser.add_argument(
        "--config-only",
        action="store_true",
        help="validate the config only; do not look at this machine (directories, ports)",
    )


def _run(args: argparse.Namespace) -> int:
    from tstoraged.config import render_config
    from tstoraged.config.preflight import check_environment

    settings, plugins = load_settings(args)
    used = {source.type for source in settings.sources}
    for info in plugins.unavailable.values():
        # Unused unavailable plugins do not stop the daemon; say so without failing.
        if info.name not in used:
            print(f"warning: plugin {info.name!r} is unavailable: {info.reason}", file=sys.stderr)
    findings = [] if args.config_only else check_environment(settings, connect=args.connect)
    for finding in findings:
        print(finding, file=sys.stderr)
    if not args.quiet:
        sys.stdout.write(render_config(settings, args.format))
    return EXIT_FAILURE if any(f.severity == "error" for f in findings) else EXIT_OK


COMMAND = Subcommand(
    name="check",
    help="validate the config and plugins, check this machine; print the effective config",
    description=(
        "Validate the config file, environment overrides and plugins (one line per problem, "
        "exit 2), then check this machine without changing anything: state and spool "
        "directories writable, the metrics port free, the files sources' directories and globs, "
        "and with --connect that TStorage answers. Errors exit 1, warnings only are printed. "
        "Prints the effective config with secrets masked."
    ),
    add_arguments=_add_arguments,
    run=_run,
)
