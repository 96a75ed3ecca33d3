"""A failing source is visible: its error, failure and restart counts in ``/status``,
``tstoraged status`` and ``/metrics``; the daemon not ready while it fails; every failure edge
and the recovery in the log; its restart backoff configurable."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from pathlib import Path

import pytest
import test_plugins_support as support
from pydantic import ValidationError
from rich.console import Console

from tstoraged import Source, SourceConfig
from tstoraged.observe.metrics import Metrics
from tstoraged.runtime.supervisor import SourceSupervisor
from tstoraged.status_view import render_status
from tstoraged.testing import DaemonProcess, wait_until

# A source that reads lines from a TCP endpoint, as a plugin author would write it: it lets
# a refused connection raise, so the core restarts it.
ENDPOINT_PLUGIN = textwrap.dedent(
    """
    import asyncio
    from tstoraged import Source, SourceConfig, SourceType, hookimpl


    class EndpointConfig(SourceConfig):
        port: int


    class EndpointSource(Source):
        async def run(self):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.config.port)
            try:
                while await reader.readline():
                    pass
            finally:
                writer.close()


    @hookimpl
    def tstoraged_source_types():
        return [SourceType("endpoint", EndpointSource, EndpointConfig, "lines over TCP")]
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def daemon_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "t.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tstorage]
            port = 1
            [metrics]
            listen = "127.0.0.1:0"
            [log]
            format = "json"
            [spool]
            enabled = true
            [daemon]
            state_dir = "{tmp_path / "state"}"
            drain_timeout = "1s"
            [[sources]]
            type = "endpoint"
            name = "plc"
            port = {port}
            restart = {{ delay = "20ms", max_delay = "40ms", healthy_after = "500ms" }}
            key = {{ cid = 1, mid = 1, moid = 1 }}
            payload = {{ codec = "raw", field = "data" }}
            """
        )
    )
    return config


def test_a_source_whose_endpoint_refuses_is_failing_everywhere_until_it_recovers(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    support.make_distribution(
        site,
        "tstoraged-endpoint",
        {"endpoint": "endpoint_plugin"},
        modules={"endpoint_plugin": ENDPOINT_PLUGIN},
    )
    env = support.cli_environment(site, "endpoint,codecs")
    port = free_port()  # nothing listens: connections are refused
    with DaemonProcess(daemon_config(tmp_path, port), env=env) as daemon:
        status = wait_until(
            lambda: (s := daemon.source_status("plc")).get("failures", 0) >= 3 and s,
            what="three failures in /status",
        )
        assert status["failing"] is True
        assert status["state"] in ("backoff", "starting", "running")
        assert status["last_error"].startswith("ConnectionRefusedError")
        assert status["errors"] >= status["failures"] >= 3
        assert status["restarts"] >= 2
        code, body = daemon.get("/readyz")
        assert code == 503
        assert json.loads(body)["reason"].startswith("source plc failing: ConnectionRefusedError")
        _, exposition = daemon.get("/metrics")
        assert 'tstoraged_source_failures_total{source="plc"}' in exposition
        assert 'tstoraged_source_restarts_total{source="plc"}' in exposition
        shown = Console(width=200, record=True)
        shown.print(render_status(daemon.status()))
        text = shown.export_text()
        assert "ConnectionRefusedError" in text
        assert "not ready: source plc failing" in text

        with socket.create_server(("127.0.0.1", port)) as endpoint:
            recovered = daemon.wait_for_event("source_recovered")
            assert recovered["failures"] >= 3
            assert recovered["last_error"].startswith("ConnectionRefusedError")
            wait_until(lambda: daemon.get("/readyz")[0] == 200, what="ready again")
            assert daemon.source_status("plc")["failing"] is False
            assert daemon.terminate() == 0
            endpoint.close()

    failed = daemon.events("source_failed")
    assert failed[0]["failures"] == 1
    assert "Traceback" in failed[0]["exception"]  # the edge carries the traceback
    assert [event["failures"] for event in failed] == list(range(1, len(failed) + 1))
    restarted = daemon.events("source_restarted")
    assert len(restarted) >= 2
    assert len(daemon.events("source_started")) == 1  # restarts are not "started" again


class Flaky(Source):
    failures_left = 3

    async def run(self) -> None:
        if Flaky.failures_left:
            Flaky.failures_left -= 1
            raise OSError("device unplugged")
        await asyncio.Event().wait()


class Reports(Metrics):
    def __init__(self) -> None:
        super().__init__(process_metrics=False)
        self.restart_delays: list[float] = []
        self.recovered = asyncio.Event()

    def source_failed(self, source: str, error: str, *, restart_in: float) -> None:
        super().source_failed(source, error, restart_in=restart_in)
        self.restart_delays.append(restart_in)

    def source_recovered(self, source: str) -> None:
        super().source_recovered(source)
        self.recovered.set()


async def test_the_restart_backoff_is_the_sources_restart_policy() -> None:
    config = SourceConfig.model_validate(
        {
            "type": "flaky",
            "name": "flaky",
            "key": {"cid": 1, "mid": 1, "moid": 1},
            "payload": {"codec": "raw", "field": "data"},
            "restart": {"delay": "10ms", "max_delay": "25ms", "healthy_after": "50ms"},
        }
    )
    reports = Reports()
    supervisor = SourceSupervisor(lambda c: Flaky(c, None), reports)  # type: ignore[arg-type]
    supervisor.start([config])
    await asyncio.wait_for(reports.recovered.wait(), 30)
    assert reports.restart_delays == [0.01, 0.02, 0.025]
    assert supervisor.failing() == {}
    stats = reports.snapshot()["sources"]["flaky"]
    assert (stats["failures"], stats["restarts"], stats["failing"]) == (3, 3, False)
    assert stats["last_error"] == "OSError: device unplugged"
    await supervisor.stop()


def test_the_restart_policy_is_validated() -> None:
    with pytest.raises(ValidationError, match="max_delay is smaller than delay"):
        SourceConfig.model_validate(
            {
                "type": "x",
                "name": "x",
                "key": {"cid": 1, "mid": 1, "moid": 1},
                "payload": {"codec": "raw", "field": "data"},
                "restart": {"delay": "1m", "max_delay": "1s"},
            }
        )
