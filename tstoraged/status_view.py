"""``tstoraged status``: ask a running daemon what flows, and show it as a table.

The daemon answers ``GET /status`` on its metrics endpoint (see
:mod:`tstoraged.observe.http`); this module fetches that JSON document and renders it with
rich: a header (TStorage connection, last successful write and its age, queue, spool) and one
row per source. ``--watch`` keeps the view live; ``--json`` prints the raw document.

The CLI registers it as a subcommand::

    sub = subparsers.add_parser("status", help="...")
    add_status_arguments(sub)
    ...
    return status_command(args, default_url=url_from_config)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tstoraged.observe.http import parse_listen
from tstoraged.observe.humanize import human_age, human_bytes, human_count

__all__ = [
    "DEFAULT_URL",
    "STALE_WRITE_S",
    "StatusUnavailable",
    "add_status_arguments",
    "fetch_status",
    "render_status",
    "status_command",
    "status_url_from_listen",
    "watch_status",
]

DEFAULT_URL = "http://127.0.0.1:9108"
STALE_WRITE_S = 300.0
"""A last successful write older than this is shown as a problem (the documented alert)."""

_STATE_STYLES = {
    "running": "green",
    "finished": "cyan",
    "stopped": "yellow",
    "recovering": "yellow",
}


class StatusUnavailable(Exception):
    """The daemon did not answer, or answered something that is not a status document."""


def status_url_from_listen(listen: str) -> str:
    """The URL to ask a daemon whose ``[metrics] listen`` is ``listen``.

    A wildcard address (the daemon listens everywhere) is asked on loopback.
    """
    host, port = parse_listen(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def status_endpoint(url: str) -> str:
    """``http://host:port`` (the metrics listen address) -> ``http://host:port/status``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StatusUnavailable(f"not an http URL: {url!r}")
    if parts.path in ("", "/"):
        return url.rstrip("/") + "/status"
    return url


def fetch_status(url: str = DEFAULT_URL, timeout: float = 3.0) -> dict[str, Any]:
    """GET the daemon's status document; :class:`StatusUnavailable` when that fails."""
    endpoint = status_endpoint(url)
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout) as response:  # noqa: S310 (http(s) checked above)
            body = response.read()
    except urllib.error.HTTPError as error:
        raise StatusUnavailable(f"{endpoint} answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise StatusUnavailable(f"no answer from {endpoint}: {reason}") from None
    try:
        document = json.loads(body)
    except ValueError:
        raise StatusUnavailable(f"{endpoint} did not answer with JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("sources"), dict):
        raise StatusUnavailable(f"{endpoint} did not answer with a tstoraged status document")
    return document


def _ago(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({human_age(now - moment)} ago)"


def _header(snapshot: Mapping[str, Any], now: float) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()

    ready = snapshot.get("ready") or {}
    readiness = (
        Text("ready", style="green")
        if ready.get("ready", True)
        else Text(f"not ready: {ready.get('reason') or 'unknown'}", style="red")
    )
    grid.add_row(
        "Daemon",
        Text.assemble(
            f"tstoraged {snapshot.get('version', '?')}, ",
            f"up {human_age(snapshot.get('uptime_s', 0))}, ",
            readiness,
        ),
    )

    connections: Mapping[str, bool] = snapshot.get("connections") or {}
    if connections:
        link = Text()
        for i, (target, up) in enumerate(sorted(connections.items())):
            link.append(", " if i else "")
            link.append(f"{target} ", style="")
            link.append("connected" if up else "disconnected", style="green" if up else "red")
    else:
        link = Text("not connected yet", style="yellow")
    outage: Mapping[str, Any] | None = snapshot.get("outage")
    if outage:
        link.append(
            f" — unreachable for {human_age(outage.get('outage_s', 0))}, "
            f"{outage.get('failed_attempts', 0)} failed attempts: "
            f"{outage.get('reason', '?')}: {outage.get('error', '')}",
            style="red",
        )
    grid.add_row("TStorage", link)

    last = snapshot.get("last_successful_write")
    stale = last is None or now - last > STALE_WRITE_S
    grid.add_row("Last write", Text(_ago(last, now), style="red" if stale else "green"))

    queue = snapshot.get("queue") or {}
    grid.add_row(
        "Queue",
        f"{human_count(queue.get('records', 0))} records, {human_bytes(queue.get('bytes', 0))}",
    )

    spool = snapshot.get("spool") or {}
    if spool.get("batches"):
        oldest = spool.get("oldest_age_s")
        age = f", oldest {human_age(oldest)}" if oldest is not None else ""
        spool_text = Text(
            f"{spool['batches']} batches, {human_bytes(spool.get('bytes', 0))}{age}",
            style="yellow",
        )
    else:
        spool_text = Text("empty")
    grid.add_row("Spool", spool_text)

    grid.add_row(
        "Throughput",
        f"in {human_count(snapshot.get('received_per_s', 0))} rec/s, "
        f"written {human_count(snapshot.get('written_per_s', 0))} rec/s, "
        f"{snapshot.get('retries', 0)} retries",
    )
    return grid


def _sources_table(sources: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(expand=False)
    table.add_column("Source")
    table.add_column("State")
    table.add_column("Records/s", justify="right")
    table.add_column("Received", justify="right")
    table.add_column("Written", justify="right")
    table.add_column("Errors", justify="right")
    table.add_column("Last error", overflow="ellipsis", max_width=40)
    for name, src in sources.items():
        state = str(src.get("state", "unknown"))
        errors = int(src.get("errors", 0))
        problem = src.get("problem")
        if src.get("failing") and state == "running":
            state = "recovering"  # restarted after a failure, not healthy yet
        table.add_row(
            name,
            Text(state, style=_STATE_STYLES.get(state, "red") if not problem else "red"),
            human_count(src.get("received_per_s", 0)),
            str(src.get("received", 0)),
            str(src.get("written", 0)),
            Text(str(errors), style="red" if errors else ""),
            Text(str(problem), style="red") if problem else (src.get("last_error") or ""),
        )
    if not sources:
        table.add_row("(no sources)", "", "", "", "", "", "")
    return table


def _detail_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_detail_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_detail_value(v) for v in value)
    return str(value)


def _details_table(sources: Mapping[str, Mapping[str, Any]]) -> Table | None:
    """What sources publish about themselves (``context.set_details``), one row per entry."""
    rows = [
        (name, str(key), _detail_value(value))
        for name, src in sources.items()
        for key, value in (src.get("details") or {}).items()
    ]
    if not rows:
        return None
    table = Table(expand=False, title="Source details", title_justify="left")
    table.add_column("Source")
    table.add_column("Item")
    table.add_column("Value", overflow="fold", max_width=80)
    for row in rows:
        table.add_row(*row)
    return table


def render_status(snapshot: Mapping[str, Any], now: float | None = None) -> RenderableType:
    """The status document as a rich renderable: header grid and per-source table.

    Ages are computed against the daemon's own clock (``snapshot["now"]``) when present.
    """
    reference = snapshot.get("now") if now is None else now
    if reference is None:
        reference = time.time()
    parts: list[RenderableType] = [
        _header(snapshot, float(reference)),
        _sources_table(snapshot["sources"]),
    ]
    details = _details_table(snapshot["sources"])
    if details is not None:
        parts.append(details)
    return Group(*parts)


def _poll(
    url: str,
    interval: float,
    timeout: float,
    iterations: int | None,
    sleep: Callable[[float], None],
) -> Iterator[dict[str, Any] | StatusUnavailable]:
    """Yield a status document (or the failure to get one) every ``interval`` seconds."""
    rounds = 0
    while iterations is None or rounds < iterations:
        if rounds:
            sleep(interval)
        try:
            yield fetch_status(url, timeout)
        except StatusUnavailable as error:
            yield error
        rounds += 1


def watch_status(
    url: str,
    interval: float,
    console: Console,
    *,
    as_json: bool = False,
    timeout: float = 3.0,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Refresh the view every ``interval`` seconds until Ctrl-C (or ``iterations`` rounds).

    A daemon that stops answering (restarting, say) is shown as such and polled again.
    With ``as_json``, one JSON document per line is printed instead of a live view.
    """
    polls = _poll(url, interval, timeout, iterations, sleep)
    try:
        if as_json:
            for result in polls:
                document = {"error": str(result)} if isinstance(result, Exception) else result
                print(json.dumps(document, separators=(",", ":")), flush=True)
            return 0
        with Live(console=console, auto_refresh=False) as live:
            for result in polls:
                if isinstance(result, Exception):
                    view: RenderableType = Panel(
                        Text(str(result), style="red"), title="tstoraged status"
                    )
                else:
                    view = render_status(result)
                live.update(view, refresh=True)
    except KeyboardInterrupt:
        pass
    return 0


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``tstoraged status`` to ``parser``."""
    parser.add_argument(
        "--url",
        default=None,
        help="base URL of the daemon's metrics endpoint "
        f"(default: from the config, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="keep refreshing the view (every 2 s, or every SECONDS)",
    )
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the daemon (default: 3)"
    )


def status_command(
    args: argparse.Namespace, *, default_url: str = DEFAULT_URL, console: Console | None = None
) -> int:
    """Run ``tstoraged status``; 0 on success, 1 when the daemon does not answer.

    ``default_url`` is used when ``--url`` is not given: the CLI derives it from the
    ``[metrics]`` section of the config.
    """
    url = getattr(args, "url", None) or default_url
    as_json = bool(getattr(args, "json", False))
    timeout = float(getattr(args, "timeout", 3.0))
    out = console or Console()
    watch = getattr(args, "watch", None)
    if watch is not None:
        return watch_status(url, max(0.1, watch), out, as_json=as_json, timeout=timeout)
    try:
        snapshot = fetch_status(url, timeout)
    except StatusUnavailable as error:
        print(
            f"tstoraged status: {error} (is the daemon running, with metrics enabled?)",
            file=sys.stderr,
        )
        return 1
    if as_json:
        print(json.dumps(snapshot, indent=2))
    else:
        out.print(render_status(snapshot))
    return 0
