"""``tstorage-server --help`` explains every option (an operator's only manual for it)."""

from __future__ import annotations

import subprocess
import sys

from tstorage_server.__main__ import _parser


def test_every_option_has_a_help_text() -> None:
    missing = [
        action.option_strings[0]
        for action in _parser()._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def test_help_names_the_connection_bound() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tstorage_server", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--max-connections" in result.stdout
    assert "connections served at once" in " ".join(result.stdout.split())
