"""A test plugin (source type ``topics``, codec ``fixed``) and installable fake distributions.

Not a test module of its own: the config, plugin and CLI tests register this module as a
plugin, or install it as a distribution with an entry point on a temporary sys.path entry,
so discovery runs through importlib.metadata exactly as for a pip-installed plugin.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tstoraged import Source, SourceConfig, SourceType, hookimpl
from tstoraged.config import Duration, Secret
from tstoraged.mapping.codecs import CodecType
from tstoraged.plugins import PluginManager

HERE = Path(__file__).resolve().parent
MODULE = "test_plugins_support"


class TopicsConfig(SourceConfig):
    """A source with list, secret and duration settings, to test nested error paths."""

    topics: list[str] = Field(min_length=1)
    qos: int = Field(default=0, ge=0, le=2)
    password: Secret | None = None
    keepalive: Duration = 30.0


class TopicsSource(Source):
    async def run(self) -> None:
        await asyncio.Event().wait()


class FixedConfig(BaseModel):
    """Codec settings: a struct format and the fields it packs."""

    model_config = ConfigDict(extra="forbid")

    format: str
    fields: list[str] = Field(min_length=1)

    @field_validator("format")
    @classmethod
    def _valid_struct(cls, value: str) -> str:
        try:
            struct.calcsize(value)
        except struct.error as exc:
            raise ValueError(f"bad struct format {value!r} (struct.error: {exc})") from None
        return value


def fixed_encoder(config: FixedConfig) -> Callable[[Mapping[str, Any]], bytes]:
    packer = struct.Struct(config.format)
    names = tuple(config.fields)
    return lambda fields: packer.pack(*(fields[name] for name in names))


@hookimpl
def tstoraged_source_types() -> list[SourceType]:
    return [SourceType("topics", TopicsSource, TopicsConfig, "test source")]


@hookimpl
def tstoraged_payload_codecs() -> list[CodecType[Any]]:
    return [CodecType("fixed", FixedConfig, fixed_encoder, "test codec")]


def make_distribution(
    root: Path,
    name: str,
    entry_points: Mapping[str, str],
    *,
    version: str = "1.2.3",
    extras: Iterable[str] = (),
    modules: Mapping[str, str] | None = None,
) -> Path:
    """Write an installed distribution (``<name>-<version>.dist-info``) under ``root``.

    Putting ``root`` on sys.path (or PYTHONPATH) makes importlib.metadata find it and its
    entry points in group ``tstoraged``, as if it had been pip-installed.
    """
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Provides-Extra: {extra}" for extra in extras]
    (dist_info / "METADATA").write_text("\n".join(metadata) + "\n")
    lines = ["[tstoraged]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in (modules or {}).items():
        (root / f"{module}.py").write_text(source)
    return root


class TopicsAgain:
    """A second plugin that contributes a source type of the same name (a clash)."""

    @hookimpl
    def tstoraged_source_types(self) -> list[SourceType]:
        return [SourceType("topics", TopicsSource, TopicsConfig, "clashing source")]


def registered_plugins() -> PluginManager:
    """A plugin manager with only this module registered (no entry points)."""
    manager = PluginManager()
    manager.register(sys.modules[__name__], "test")
    return manager


def write_config(directory: Path, text: str) -> Path:
    """Write ``text`` (dedented) as ``tstoraged.toml`` in ``directory``."""
    path = directory / "tstoraged.toml"
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``tstoraged <args>`` in a new process with this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_environment(site: Path, load_plugins: str) -> dict[str, str]:
    """This process's environment plus ``site`` (fake distributions) on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(HERE)])
    env["TSTORAGED_LOAD_PLUGINS"] = load_plugins
    env.pop("TSTORAGED_CONFIG", None)
    return env
