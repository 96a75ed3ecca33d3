"""``tstoraged plugins``: list installed plugins, what they contribute, and their status."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from tstoraged.cli import EXIT_FAILURE, EXIT_OK, Subcommand
from tstoraged.cli._common import print_problems

if TYPE_CHECKING:
    from tstoraged.plugins import PluginInfo


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _run(args: argparse.Namespace) -> int:
    from tstoraged.plugins import PluginManager

    plugins = PluginManager.from_entry_points()
    infos = plugins.plugins()
    problems = plugins.problems
    if args.json:
        document = {
            "plugins": [info.to_dict() for info in infos],
            "problems": list(problems),
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        sys.stdout.write("".join(_describe(info) for info in infos) or "no plugins loaded\n")
        print_problems(problems)
    return EXIT_FAILURE if problems else EXIT_OK


def _describe(info: PluginInfo) -> str:
    package = " ".join(part for part in (info.distribution, info.version) if part) or "-"
    lines = [f"{info.name}  ({package}; module {info.module or '-'})"]
    if info.status == "loaded":
        lines += [
            "  status: loaded",
            f"  source types: {', '.join(info.source_types) or '-'}",
            f"  codecs: {', '.join(info.codecs) or '-'}",
            f"  commands: {', '.join(info.commands) or '-'}",
            f"  hooks: {', '.join(info.hooks) or '-'}",
        ]
        if info.decoders:  # message decoders (for MQTT and other message sources)
            lines.insert(-2, f"  decoders: {', '.join(info.decoders)}")
    else:
        lines.append(f"  status: unavailable: {info.reason}")
        if info.install_hint:
            lines.append(f"  to fix: {info.install_hint}")
    return "\n".join(lines) + "\n\n"


COMMAND = Subcommand(
    name="plugins",
    help="list installed plugins: packages, versions, source types, codecs, status",
    add_arguments=_add_arguments,
    run=_run,
)
