"""A normal (non-editable) install, as a plugin author gets it: wheels of tstoraged and of the
example plugin installed into a fresh virtual environment. There ``py.typed`` makes
``mypy --strict`` see tstoraged's real types, and the example plugin's own tests pass.

The fresh environment borrows only the third-party dependencies (pydantic, pytest, mypy, ...)
from the development environment, through a path entry; tstoraged and the plugin are the
built wheels. No network is needed beyond what pip's isolated build already uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tstoraged-plugin-example"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".venv", ".git")

pytestmark = pytest.mark.slow


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_wheel(project: Path, out: Path) -> Path:
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        out,
        f"./{project.name}",
        cwd=project.parent,
    )
    (wheel,) = [w for w in out.glob("*.whl") if w.name.startswith(project.name.replace("-", "_"))]
    return wheel


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python of a fresh venv with both wheels installed, a copy of the example's tests)."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "tstoraged"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("tstoraged", "tstorage_client", "tstorage_server", "plugins"):
        shutil.copytree(REPO / name, source / name, ignore=_IGNORED)
    example = root / "tstoraged-plugin-example"
    shutil.copytree(EXAMPLE, example, ignore=_IGNORED)
    wheels = root / "wheels"
    core_wheel = build_wheel(source, wheels)
    example_wheel = build_wheel(example, wheels)
    shutil.rmtree(example / "tstoraged_example")  # the tests must import the installed wheel

    venv = root / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root)
    python = venv / "bin" / "python"
    site = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root
        ).strip()
    )
    run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--target",
        site,
        core_wheel,
        example_wheel,
        cwd=root,
    )
    # Third-party dependencies from the development environment (a plain path entry: its
    # .pth files, among them the editable install of tstoraged, are not processed).
    (site / "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, example


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSTORAGED_", "PYTHON"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_the_wheel_installs_tstoraged_with_py_typed_not_the_source_tree(
    fresh_venv: tuple[Path, Path],
) -> None:
    python, example = fresh_venv
    where = run(
        python,
        "-c",
        "import tstoraged, tstoraged_example as e; print(tstoraged.__file__); print(e.__file__)",
        cwd=example,
        env=clean_env(),
    )
    core, plugin = (Path(line) for line in where.split())
    assert REPO not in core.parents
    assert (core.parent / "py.typed").is_file()
    assert REPO not in plugin.parents


def test_mypy_strict_on_a_plugin_sees_tstoraged_types(
    fresh_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    python, _ = fresh_venv
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(
        "from tstoraged import PollingConfig, PollingSource, Tick, Duration\n"
        "\n"
        "class MyConfig(PollingConfig):\n"
        "    timeout: Duration = 5.0\n"
        "\n"
        "class MySource(PollingSource):\n"
        "    config: MyConfig\n"
        "\n"
        "    async def poll(self, tick: Tick) -> None:\n"
        "        wrong: str = tick.at_ns\n"  # a type error mypy must find
    )
    result = subprocess.run(
        [python, "-m", "mypy", "--strict", "--no-incremental", str(plugin)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # The only error is the planted one: tstoraged's types were found and are not Any.
    assert result.returncode == 1, result.stdout
    (error,) = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert (
        'Incompatible types in assignment (expression has type "int", variable has type "str")'
        in error
    )
    plugin.write_text(plugin.read_text().replace("wrong: str", "right: int"))
    run(python, "-m", "mypy", "--strict", "--no-incremental", plugin, cwd=tmp_path, env=clean_env())


def test_the_example_plugin_tests_pass_against_the_installed_wheels(
    fresh_venv: tuple[Path, Path],
) -> None:
    python, example = fresh_venv
    output = run(
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests",
        cwd=example,
        env=clean_env(),
    )
    assert " passed" in output
    assert "failed" not in output


def test_demo_runs_from_the_wheel(fresh_venv: tuple[Path, Path], tmp_path: Path) -> None:
    python, _ = fresh_venv
    output = run(python, "-m", "tstoraged.cli", "demo", cwd=tmp_path, env=clean_env())
    assert "OK: all" in output
    assert "records arrived" in output


def test_the_wheel_ships_the_reference_config(
    fresh_venv: tuple[Path, Path], tmp_path: Path
) -> None:
    python, _ = fresh_venv
    tstoraged = (python, "-m", "tstoraged.cli")  # installed with --target: no bin/ scripts
    reference = run(*tstoraged, "sample-config", cwd=tmp_path, env=clean_env())
    assert reference == (REPO / "config" / "tstoraged.toml").read_text()
    (tmp_path / "t.toml").write_text(reference)
    run(
        *tstoraged,
        "check",
        "-q",
        "--config-only",
        "-c",
        tmp_path / "t.toml",
        cwd=tmp_path,
        env=clean_env(),
    )
