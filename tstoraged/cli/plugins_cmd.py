"""``tstoraged plugins``: list installed plugins, what they contribute, and their status."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
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
    if info.status in ("loaded", "error"):
        lines.append("  status: loaded" if info.status == "loaded" else "  status: error")
        lines += [f"  error: {error}" for error in info.errors]
        lines += [
            f"  source types: {_named(info.source_types, info.descriptions.get('source_types'))}",
            f"  codecs: {_named(info.codecs, info.descriptions.get('codecs'))}",
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


def _named(names: tuple[str, ...], descriptions: Mapping[str, str] | None) -> str:
    """``files (Tail files), drop`` -- each name with its description, if it has one."""
    described = descriptions or {}
    shown = [f"{name} ({described[name]})" if described.get(name) else name for name in names]
    return ", ".join(shown) or "-"


COMMAND = Subcommand(
    name="plugins",
    help="list installed plugins: packages, versions, source types, codecs, status",
    add_arguments=_add_arguments,
    run=_run,
)
