"""``tstoraged sample-config``: print the documented reference config (every setting)."""

from __future__ import annotations

import argparse
import sys

from tstoraged.cli import EXIT_OK, Subcommand


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo", action="store_true", help="print the config that tstoraged demo runs instead"
    )


def _run(args: argparse.Namespace) -> int:
    from tstoraged.cli.demo_cmd import REFERENCE

    name = "demo.toml" if args.demo else "tstoraged.toml"
    sys.stdout.write((REFERENCE / name).read_text(encoding="utf-8"))
    return EXIT_OK


COMMAND = Subcommand(
    name="sample-config",
    help="print the reference config with every setting and its default",
    description=(
        "Print the annotated reference config shipped with tstoraged, to start a config from: "
        "tstoraged sample-config > /etc/tstoraged/tstoraged.toml"
    ),
    add_arguments=_add_arguments,
    run=_run,
)
