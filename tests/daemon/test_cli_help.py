"""Help texts read as plain text: no reStructuredText or Markdown backticks."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from tstoraged.cli import build_parser, plain_text


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_no_help_text_shows_backticks() -> None:
    shown = {sub.prog: sub.format_help() for sub in parsers(build_parser())}
    assert len(shown) > 8  # every command and every dead-letters action
    assert {prog: text for prog, text in shown.items() if "`" in text} == {}


def test_literals_lose_their_backticks() -> None:
    assert plain_text("``tstoraged import`` reads ``files`` like `tail -F`") == (
        "tstoraged import reads files like tail -F"
    )
