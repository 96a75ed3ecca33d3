"""`tstoraged status`: fetch the daemon's status document and render it."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from tstoraged.cli import main
from tstoraged.observe.http import ObservabilityServer, Readiness, parse_listen
from tstoraged.observe.metrics import Metrics
from tstoraged.status_view import (
    StatusUnavailable,
    add_status_arguments,
    fetch_status,
    render_status,
    status_command,
    status_url_from_listen,
    watch_status,
)


def busy_metrics() -> Metrics:
    metrics = Metrics(process_metrics=False)
    metrics.source_state("line-3", "running")
    metrics.source_state("meter-2", "backoff")
    metrics.records_received("line-3", 12_000)
    metrics.records_written("line-3", 11_500)
    metrics.records_rejected("meter-2", 4, "timeout reading register 40001")
    metrics.batch_written(11_500, 276_000, 0.01)
    metrics.connection_state("db.example:2025", True)
    metrics.queue_depth(500, 12_000)
    metrics.spool_state(2 * 1024 * 1024, 3, 75.0)
    return metrics


@pytest.fixture
async def daemon() -> AsyncIterator[ObservabilityServer]:
    async with ObservabilityServer(
        busy_metrics(), port=0, readiness=lambda: Readiness(True)
    ) as server:
        yield server


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def text_of(renderable: object, width: int = 160) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return console.export_text()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_status_arguments(parser)
    return parser.parse_args(argv)


async def test_fetch_status_reads_the_daemons_document(daemon: ObservabilityServer) -> None:
    document = await asyncio.to_thread(fetch_status, daemon.url)
    assert document["sources"]["line-3"]["received"] == 12_000
    assert document["ready"] == {"ready": True, "reason": ""}
    same = await asyncio.to_thread(fetch_status, daemon.url + "/status")
    assert same["sources"].keys() == document["sources"].keys()


def test_render_shows_sources_connection_last_write_queue_and_spool() -> None:
    snapshot = busy_metrics().snapshot()
    snapshot["now"] = snapshot["last_successful_write"] + 42

    text = text_of(render_status(snapshot))

    assert "db.example:2025 connected" in text
    assert "(42s ago)" in text
    assert "500 records, 11.7 KiB" in text
    assert "3 batches, 2.0 MiB, oldest 1m15s" in text
    line_3 = next(line for line in text.splitlines() if "line-3" in line)
    assert "running" in line_3
    assert "12000" in line_3
    assert "11500" in line_3
    meter = next(line for line in text.splitlines() if "meter-2" in line)
    assert "backoff" in meter
    assert "4" in meter
    assert "timeout reading register" in meter


def test_render_flags_a_daemon_that_never_wrote_and_is_not_ready() -> None:
    snapshot = Metrics(process_metrics=False).snapshot()
    snapshot["ready"] = {"ready": False, "reason": "tstorage not connected"}
    text = text_of(render_status(snapshot))
    assert "Last write  never" in text
    assert "not ready: tstorage not connected" in text
    assert "not connected yet" in text
    assert "(no sources)" in text


def test_render_shows_how_long_tstorage_has_been_unreachable_and_why() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.connection_state("db.example:2025", False)
    assert metrics.snapshot()["outage"] is None  # no outage log attached: reachable
    metrics.outage = lambda: {
        "since": 1_700_000_000.0,
        "outage_s": 125.4,
        "reason": "connection_refused",
        "error": "connection refused: [Errno 111] Connection refused",
        "failed_attempts": 17,
    }
    text = " ".join(text_of(render_status(metrics.snapshot())).split())
    assert "db.example:2025 disconnected — unreachable for 2m05s, 17 failed attempts" in text
    assert "connection_refused: connection refused: [Errno 111]" in text


async def test_status_command_prints_the_table(
    daemon: ObservabilityServer,
) -> None:
    console = Console(record=True, width=160, color_system=None)
    code = await asyncio.to_thread(status_command, parse("--url", daemon.url), console=console)
    assert code == 0
    assert "line-3" in console.export_text()


async def test_status_command_json_is_the_document(
    daemon: ObservabilityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(status_command, parse("--json"), default_url=daemon.url)
    assert code == 0
    assert json.loads(capsys.readouterr().out)["sources"]["line-3"]["written"] == 11_500


def test_status_command_fails_clearly_when_no_daemon_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert status_command(parse("--url", url, "--timeout", "2")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tstoraged status: no answer from {url}/status")
    assert "is the daemon running" in err


async def test_something_else_on_the_port_is_not_a_status(daemon: ObservabilityServer) -> None:
    with pytest.raises(StatusUnavailable, match="answered 404"):
        await asyncio.to_thread(fetch_status, daemon.url + "/nope")
    with pytest.raises(StatusUnavailable, match="did not answer with JSON"):
        await asyncio.to_thread(fetch_status, daemon.url + "/healthz")
    with pytest.raises(StatusUnavailable, match="not an http URL"):
        fetch_status("ftp://127.0.0.1:9108")


async def test_watch_refreshes_and_survives_a_daemon_that_goes_away(
    daemon: ObservabilityServer,
) -> None:
    console = Console(record=True, width=160, color_system=None, force_terminal=True)
    url = daemon.url
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the daemon stops between the first and second poll
        sleeps.append(seconds)
        asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(10)

    loop = asyncio.get_running_loop()
    code = await asyncio.to_thread(
        watch_status, url, 1.5, console, iterations=2, sleep=sleep, timeout=2
    )
    assert code == 0
    assert sleeps == [1.5]
    text = console.export_text()
    assert "line-3" in text
    assert "no answer from" in text


async def test_watch_json_prints_one_document_per_round(
    daemon: ObservabilityServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await asyncio.to_thread(
        watch_status, daemon.url, 0, Console(), as_json=True, iterations=3, sleep=lambda s: None
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all("line-3" in json.loads(line)["sources"] for line in lines)


def test_arguments() -> None:
    assert parse().url is None
    assert parse("--watch").watch == 2.0
    assert parse("--watch", "5").watch == 5.0
    assert parse("--json").json is True


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:9108", "http://127.0.0.1:9108"),
        ("0.0.0.0:9200", "http://127.0.0.1:9200"),
        (":9108", "http://127.0.0.1:9108"),
        ("[::1]:9108", "http://[::1]:9108"),
        ("[::]:9108", "http://[::1]:9108"),
    ],
)
def test_url_from_the_metrics_listen_setting(listen: str, url: str) -> None:
    assert status_url_from_listen(listen) == url


@pytest.mark.parametrize("listen", ["9108", "host:", "::1:9108", "h:99999"])
def test_malformed_listen_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|brackets"):
        parse_listen(listen)


async def test_status_reads_the_metrics_listen_of_its_config(
    daemon: ObservabilityServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.toml"
    path.write_text(f'[metrics]\nlisten = "127.0.0.1:{daemon.port}"\n')
    code = await asyncio.to_thread(main, ["status", "--json", "-c", str(path)])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["sources"]["line-3"]["written"] == 11_500


def test_status_with_an_invalid_config_reports_it_instead_of_asking_the_default_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[metrics]\nlisten = "9108"\n')
    assert main(["status", "-c", str(path), "--timeout", "0.5"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}: metrics.listen = '9108': expected \"HOST:PORT\"")
