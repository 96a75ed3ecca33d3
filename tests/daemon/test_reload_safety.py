"""Reload safety: nothing in a new config -- no exception from plugin code validating or
compiling it -- ends the daemon; refusals list every problem and are never rate-limited;
an applied reload names every key that changed."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_plugins_support as support
import tstoraged_codecs
from pydantic import BaseModel, ConfigDict, field_validator
from test_daemon_process import config_text

from tstorage_server.testing import ServerProcess
from tstoraged import ConfigRefused, SourceConfig, SourceType, hookimpl
from tstoraged.config import ConfigError, load_config
from tstoraged.mapping.codecs import CodecType
from tstoraged.plugins import PluginManager
from tstoraged.testing import DaemonProcess, NotifySocket

# The plugin under test, as its own installed distribution (entry point "scaled").
SCALED_PLUGIN = """
import struct
from pydantic import BaseModel, ConfigDict
from tstoraged import CodecType, ConfigRefused, hookimpl


class ScaledConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    scale: float


def scaled_factory(config):
    if config.scale == 0:
        raise ConfigRefused("must not be 0 (every value would be 0)", key="scale")
    if config.scale < 0:
        raise ValueError("math domain error")  # a plugin bug, not a decision
    packer = struct.Struct("<h")
    return lambda fields: packer.pack(round(fields[config.field] * config.scale))


@hookimpl
def tstoraged_payload_codecs():
    return [CodecType("scaled", ScaledConfig, scaled_factory, "value * scale as int16")]
"""


class ScaledConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    scale: float


def refusing_factory(config: ScaledConfig) -> object:
    if config.scale == 0:
        raise ConfigRefused("must not be 0", key="scale")
    raise ValueError("math domain error")


class TouchyConfig(SourceConfig):
    limit: int = 1

    @field_validator("limit")
    @classmethod
    def _crashes(cls, value: int) -> int:
        if value > 10:
            raise LookupError("a validator bug")  # not wrapped by pydantic
        return value


class RefusingPlugin:
    @hookimpl
    def tstoraged_payload_codecs(self) -> list[CodecType[ScaledConfig]]:
        return [CodecType("scaled", ScaledConfig, refusing_factory)]  # type: ignore[arg-type]

    @hookimpl
    def tstoraged_source_types(self) -> list[SourceType]:
        return [SourceType("touchy", support.TopicsSource, TouchyConfig)]


def problems_of(tmp_path: Path, sources: str) -> list[str]:
    manager = PluginManager()
    manager.register(RefusingPlugin(), "refusing")
    manager.register(tstoraged_codecs, "codecs")
    path = support.write_config(tmp_path, sources)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={}, plugins=manager)
    return [str(problem) for problem in info.value.problems]


def test_a_factory_raising_config_refused_is_a_problem_at_its_key(tmp_path: Path) -> None:
    (problem,) = problems_of(
        tmp_path,
        """
        [[sources]]
        type = "touchy"
        name = "t"
        key = { cid = 1, mid = 2, moid = 3 }
        payload = { codec = "scaled", field = "v", scale = 0 }
        """,
    )
    assert problem.endswith("sources[0].payload.scale: must not be 0")


def test_any_other_exception_from_plugin_code_is_a_problem_naming_source_and_type(
    tmp_path: Path,
) -> None:
    problems = problems_of(
        tmp_path,
        """
        [[sources]]
        type = "touchy"
        name = "t"
        key = { cid = 1, mid = 2, moid = 3 }
        payload = { codec = "scaled", field = "v", scale = -1 }

        [[sources]]
        type = "touchy"
        name = "u"
        limit = 11
        key = { cid = 1, mid = 2, moid = 3 }
        payload = { format = "<d", fields = ["v"] }
        """,
    )
    assert len(problems) == 2, problems
    assert (
        "sources[0].payload: codec 'scaled' failed on this config: ValueError: math domain"
        in (problems[0])
    )
    assert "sources[1]" in problems[1]
    assert "LookupError: a validator bug" in problems[1]


def daemon_config(port: int, state: Path, scale: float, extra: str = "") -> str:
    source = f"""
[[sources]]
type = "generator"
name = "gen"
rate = 20
payload = {{ codec = "scaled", field = "value", scale = {scale} }}
"""
    return config_text(port, state, source, extra)


class Reloadable:
    """A running daemon and its sd_notify socket; :meth:`reload` is SIGHUP until READY=1."""

    def __init__(self, daemon: DaemonProcess, notify: NotifySocket) -> None:
        self.daemon = daemon
        self.notify = notify
        self.ready = notify.wait_for("READY=1")

    def reload(self) -> None:
        self.daemon.send_signal(signal.SIGHUP)
        reloading = self.notify.wait_for("RELOADING=1", after=self.ready)
        self.ready = self.notify.wait_for("READY=1", after=reloading)


@contextlib.contextmanager
def reloadable_daemon(tmp_path: Path, cfg: Path, env: dict[str, str]) -> Iterator[Reloadable]:
    with (
        NotifySocket(tmp_path) as notify,
        DaemonProcess(cfg, notify=notify, env=env) as daemon,
    ):
        yield Reloadable(daemon, notify)


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    support.make_distribution(
        site,
        "tstoraged-scaled",
        {"scaled": "scaled_plugin"},
        modules={"scaled_plugin": SCALED_PLUGIN},
    )
    return support.cli_environment(site, "codecs,generator,scaled")


@pytest.fixture
def server():
    with ServerProcess() as proc:
        yield proc


def test_refused_reloads_list_every_problem_each_time_and_the_daemon_keeps_running(
    server: ServerProcess, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    cfg = tmp_path / "t.toml"
    state = tmp_path / "state"
    cfg.write_text(daemon_config(server.port, state, 2))
    with reloadable_daemon(tmp_path, cfg, plugin_env) as running:
        daemon = running.daemon
        # Two problems at once: a plugin factory crashing, and a core setting.
        bad = daemon_config(server.port, state, -1, '[batch]\nflush_interval = "soon"')
        cfg.write_text(bad)
        running.reload()
        (first,) = daemon.wait_for_events("reload_refused", 1)
        assert first["count"] == 2
        assert any("batch.flush_interval" in p for p in first["problems"]), first
        assert any(
            "sources[0].payload: codec 'scaled' failed on this config: ValueError" in p
            for p in first["problems"]
        ), first
        # The same refusal again, at once: logged again in full, not rate-limited away.
        running.reload()
        cfg.write_text(daemon_config(server.port, state, 0))
        running.reload()
        refusals = daemon.wait_for_events("reload_refused", 3)
        assert refusals[1]["problems"] == first["problems"]
        assert "suppressed" not in refusals[1]
        (refused,) = refusals[2]["problems"]
        assert refused.endswith("sources[0].payload.scale: must not be 0 (every value would be 0)")
        assert daemon.process is not None
        assert daemon.process.poll() is None
        assert daemon.source_status("gen")["state"] == "running"
        assert daemon.terminate() == 0
    assert daemon.events("reload_applied") == []


def test_an_applied_reload_names_every_changed_key_core_settings_included(
    server: ServerProcess, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    cfg = tmp_path / "t.toml"
    state = tmp_path / "state"
    cfg.write_text(daemon_config(server.port, state, 2))
    with reloadable_daemon(tmp_path, cfg, plugin_env) as running:
        daemon = running.daemon
        running.reload()  # nothing changed
        cfg.write_text(daemon_config(server.port, state, 3, '[batch]\nflush_interval = "5s"'))
        running.reload()
        unchanged, applied = daemon.wait_for_events("reload_applied", 2)
        assert unchanged["nothing_changed"] is True
        assert unchanged["settings"] == []
        assert applied["nothing_changed"] is False
        assert applied["settings"] == ["batch.flush_interval", "sources.gen.payload.scale"]
        assert applied["changed"] == ["gen"]
        assert daemon.terminate() == 0


def test_check_and_status_report_a_crashing_factory_in_one_line(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(daemon_config(1, tmp_path / "state", -1))
    check = support.run_cli("check", "-q", "-c", os.fspath(cfg), env=plugin_env)
    assert check.returncode == 2
    (line,) = check.stderr.splitlines()
    assert "sources[0].payload: codec 'scaled' failed on this config: ValueError" in line
    status = support.run_cli("status", "-c", os.fspath(cfg), "--timeout", "0.5", env=plugin_env)
    assert status.returncode == 2  # the config's problem, not "no answer" from a default URL
    assert status.stderr.splitlines() == [line]


def test_sighup_says_when_the_installed_plugins_changed_and_that_a_restart_loads_them(
    server: ServerProcess, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = support.cli_environment(site, "codecs,generator,topics")
    cfg = tmp_path / "t.toml"
    state = tmp_path / "state"
    cfg.write_text(config_text(server.port, state, ""))
    with reloadable_daemon(tmp_path, cfg, env) as running:
        # Installed while the daemon runs: a new distribution with an entry point.
        support.make_distribution(site, "tstoraged-topics", {"topics": support.MODULE})
        running.reload()
        (changed,) = running.daemon.wait_for_events("plugins_changed", 1)
        assert changed["installed"] == ["topics"]
        assert changed["removed"] == []
        assert "restart the daemon" in changed["action"]
        assert running.daemon.wait_for_event("reload_applied")  # the reload itself went on
        assert running.daemon.terminate() == 0
