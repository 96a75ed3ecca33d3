"""A built wheel, installed in a fresh virtual environment, runs ``tstoraged demo``.

The wheel is built once from a copy of the source tree (nothing is written into the checkout)
and installed without dependencies; the fresh environment borrows the dependencies from the
test environment's site-packages through a ``.pth`` line, which does not bring the editable
install along (``.pth`` files of a directory added that way are not processed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPIED = [
    "pyproject.toml",
    "README.md",
    "config",
    "plugins",
    "tstorage_client",
    "tstorage_server",
    "tstoraged",
]


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh venv with only the built wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in COPIED:
        origin = ROOT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
            shutil.copytree(origin, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", ".", cwd=source)
    (wheel,) = (work / "dist").glob("tstoraged-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
        ).strip()
    )
    (site / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(*pip, "--python", python, "install", "--no-deps", "--no-index", wheel, cwd=work)
    return venv / "bin"


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    where = run(
        installed / "python", "-c", "import tstoraged; print(tstoraged.__file__)", cwd=tmp_path
    )
    assert where.startswith(str(installed.parent)), where


def test_demo_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    output = run(installed / "tstoraged", "demo", cwd=tmp_path)
    assert "OK: all" in output
    assert "records arrived" in output


def test_the_wheel_ships_the_reference_config(installed: Path, tmp_path: Path) -> None:
    reference = run(installed / "tstoraged", "sample-config", cwd=tmp_path)
    assert reference == (ROOT / "config" / "tstoraged.toml").read_text()
    (tmp_path / "t.toml").write_text(reference)
    run(
        installed / "tstoraged",
        "check",
        "-q",
        "--config-only",
        "-c",
        tmp_path / "t.toml",
        cwd=tmp_path,
    )
