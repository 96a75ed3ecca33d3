"""What a source reports about itself: ``set_problem``, ``set_details``, ``context.metrics``.

Unit tests on the core's objects, then a real daemon process running a plugin that reports,
seen through ``/readyz``, ``/status``, ``/metrics`` and ``tstoraged status``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import test_plugins_support as support
from prometheus_client import generate_latest

from tstoraged import SourceConfig
from tstoraged.observe.metrics import Metrics
from tstoraged.status_view import render_status
from tstoraged.testing import DaemonProcess, RecordingContext, wait_until


def generator_config(name: str = "probe") -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "type": "generator",
            "name": name,
            "key": {"cid": 1, "mid": 2, "moid": 3},
            "payload": {"codec": "raw", "field": "data"},
        }
    )


def test_recording_context_keeps_problem_details_and_metrics(tmp_path: Path) -> None:
    context = RecordingContext(generator_config(), tmp_path)
    assert context.problem is None
    context.set_problem("broker unreachable: connection refused")
    context.set_details({"connection": "reconnecting", "attempts": 3})
    messages = context.metrics.counter("test_messages", "Messages seen.", ["topic"])
    messages.labels(topic="a").inc()
    messages.labels(topic="a").inc(2)
    context.metrics.gauge("test_in_flight", "Unacked messages.").labels().set(7)
    assert context.problem == "broker unreachable: connection refused"
    assert context.details == {"connection": "reconnecting", "attempts": 3}
    assert context.metric_value("test_messages_total", topic="a") == 3
    assert context.metric_value("test_in_flight") == 7
    context.set_problem(None)
    assert context.problem is None


def test_plugin_metrics_are_shared_families_with_the_source_label() -> None:
    metrics = Metrics(process_metrics=False)
    for name in ("a", "b"):
        metrics.source_metrics(name).counter("test_polls", "Polls.").labels().inc()
    metrics.source_metrics("a").counter("test_polls", "Polls.").labels().inc()
    exposition = generate_latest(metrics.registry).decode()
    assert 'tstoraged_test_polls_total{source="a"} 2.0' in exposition
    assert 'tstoraged_test_polls_total{source="b"} 1.0' in exposition
    metrics.remove_source("a")
    exposition = generate_latest(metrics.registry).decode()
    assert 'source="a"' not in exposition
    assert 'tstoraged_test_polls_total{source="b"} 1.0' in exposition


def test_plugin_metric_mistakes_are_clear_errors() -> None:
    source = Metrics(process_metrics=False).source_metrics("a")
    source.counter("test_x", "X.", ["device"])
    with pytest.raises(ValueError, match="already a counter with labels"):
        source.gauge("test_x", "X.")
    with pytest.raises(ValueError, match="lower-case letters"):
        source.counter("Bad-Name", "X.")
    with pytest.raises(ValueError, match="'source' is added by the core"):
        source.counter("test_y", "Y.", ["source"])
    with pytest.raises(ValueError, match="do not match"):
        source.counter("test_x", "X.", ["device"]).labels(unit="1")


def test_restarting_a_source_clears_its_problem_and_status_shows_both() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.source_state("bus-1", "running")
    metrics.source_problem("bus-1", "all 3 devices silent")
    metrics.source_details("bus-1", {"devices": {"meter-1": "backoff", "meter-2": "up"}})
    snapshot = metrics.snapshot()
    assert snapshot["sources"]["bus-1"]["problem"] == "all 3 devices silent"
    assert metrics.source_problems() == {"bus-1": "all 3 devices silent"}
    console_text = _text(render_status(snapshot))
    assert "all 3 devices silent" in console_text
    assert "meter-1=backoff, meter-2=up" in console_text
    metrics.source_state("bus-1", "starting")
    assert metrics.source_problems() == {}


def _text(renderable: object) -> str:
    from rich.console import Console

    console = Console(record=True, width=160, color_system=None)
    console.print(renderable)
    return console.export_text()


REPORTING_PLUGIN = textwrap.dedent(
    """
    import asyncio

    from tstoraged import Source, SourceConfig, SourceType, hookimpl


    class ReportingConfig(SourceConfig):
        problem: str | None = None


    class ReportingSource(Source):
        config: ReportingConfig

        async def run(self) -> None:
            self.context.set_details({"connection": "up", "devices": {"m1": "ok"}})
            self.context.metrics.counter("reporting_polls", "Polls made.").labels().inc(5)
            self.context.set_problem(self.config.problem)
            await asyncio.Event().wait()


    @hookimpl
    def tstoraged_source_types():
        return [SourceType("reporting", ReportingSource, ReportingConfig, "reports")]
    """
)


def test_a_running_daemon_shows_what_its_source_reports(tmp_path: Path) -> None:
    site = tmp_path / "site"
    support.make_distribution(
        site,
        "tstoraged-reporting",
        {"reporting": "reporting_plugin"},
        modules={"reporting_plugin": REPORTING_PLUGIN},
    )
    env = support.cli_environment(site, "reporting,codecs")
    config = tmp_path / "t.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tstorage]
            port = 1
            [metrics]
            listen = "127.0.0.1:0"
            [daemon]
            state_dir = "{tmp_path / "state"}"
            [[sources]]
            type = "reporting"
            name = "bus-1"
            problem = "every device on /dev/ttyUSB0 is silent"
            key = {{ cid = 1, mid = 1, moid = 1 }}
            payload = {{ codec = "raw", field = "data" }}
            """
        )
    )
    with DaemonProcess(config, env=env) as daemon:
        daemon.wait_for_event("daemon_started")
        source = wait_until(
            lambda: (
                daemon.source_status("bus-1")
                if daemon.source_status("bus-1").get("problem")
                else None
            ),
            what="the source's problem in /status",
        )
        assert source["problem"] == "every device on /dev/ttyUSB0 is silent"
        assert source["details"] == {"connection": "up", "devices": {"m1": "ok"}}
        code, body = daemon.get("/readyz")
        assert code == 503
        assert json.loads(body)["reason"] == "source bus-1: every device on /dev/ttyUSB0 is silent"
        _, exposition = daemon.get("/metrics")
        assert 'tstoraged_reporting_polls_total{source="bus-1"} 5.0' in exposition
        assert daemon.terminate() == 0
