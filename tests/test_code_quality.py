"""The code base stays lint-clean, formatted and type-checked (mypy --strict)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing_to_lint() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_unchanged() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_passes_on_every_package() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_in_the_repository_reads_outside_it() -> None:
    """A fresh clone has nothing beside it: no code, test or config may reach for ../shared."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    pattern = re.compile(r"""(\.\./)+shared\b|["']shared["']\s*,\s*["']tstorage""")
    offenders = [
        f"{name}:{number}"
        for name in tracked
        if name.endswith((".py", ".toml", ".cfg", ".ini", ".sh")) or name.startswith(".ci/")
        for number, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
        if pattern.search(line) and name != "tests/test_code_quality.py"
    ]
    assert offenders == []


def test_no_test_module_imports_a_conftest_by_name() -> None:
    """``from conftest import ...`` gets whichever conftest.py pytest imported last.

    pytest imports every tests/<dir>/conftest.py as the module ``conftest``, so such an
    import works when its directory is collected alone and fails at collection when another
    directory's conftest came later (``pytest tests/compat tests/client``). Helpers live in a
    module of their own name (client_testkit, faultkit, compat_kit).
    """
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if "conftest" in names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
