"""``tstoraged demo``: the embedded default, end to end, in one command.

Starts a fresh in-memory ``tstorage-server``, runs the daemon on the demo config (a generator
and a drop directory of CSV exports; ``config/demo.toml`` in the source tree, shipped in the
package as ``tstoraged/reference/demo.toml``), shows the records arriving, stops the daemon
gracefully, and reads records back from the server with the client library.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import tomllib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tstoraged.cli import EXIT_FAILURE, EXIT_OK, Subcommand

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
"""The shipped configs (in the source tree a link to ``config/``)."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=REFERENCE / "demo.toml",
        help="demo config (default: the one shipped with tstoraged, config/demo.toml)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REFERENCE / "demo-data",
        help="CSV exports dropped into the files source (default: the shipped demo data)",
    )
    parser.add_argument(
        "--dir", type=Path, help="keep state and drop directory here (default: a temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after N seconds")


def _prepare(config: dict[str, Any], work: Path, port: int) -> tuple[dict[str, Any], Path | None]:
    """Point the demo config at the fresh server and the work directory."""
    config.setdefault("tstorage", {})["port"] = port
    config.setdefault("daemon", {})["state_dir"] = str(work / "state")
    config.setdefault("log", {}).update({"level": "warning", "format": "console"})
    drop_dir = None
    for source in config.get("sources", []):
        if source.get("type") == "files" and source.get("mode") == "drop":
            drop_dir = work / "drop"
            drop_dir.mkdir(parents=True, exist_ok=True)  # the daemon does not create it
            source["directory"] = str(drop_dir)
    return config, drop_dir


def _expected(config: dict[str, Any], data_files: list[Path]) -> dict[str, int]:
    expected: dict[str, int] = {}
    for source in config.get("sources", []):
        if source.get("type") == "generator" and source.get("count"):
            expected[source["name"]] = int(source["count"])
        elif source.get("type") == "files":
            rows = sum(max(0, len(f.read_text().splitlines()) - 1) for f in data_files)
            expected[source["name"]] = rows
    return expected


def _toml(config: dict[str, Any]) -> str:
    from tstoraged.config.render import to_toml

    return to_toml(config)


def _drop_files(drop_dir: Path, data_files: list[Path]) -> None:
    drop_dir.mkdir(parents=True, exist_ok=True)
    for data in data_files:
        # Copy under a temp name, then rename: the source only takes complete files.
        partial = drop_dir / f".{data.name}.part"
        shutil.copyfile(data, partial)
        partial.rename(drop_dir / data.name)


async def _run_daemon(
    config_file: Path,
    drop_dir: Path | None,
    data_files: list[Path],
    expected: dict[str, int],
    wait_s: float,
) -> tuple[dict[str, int], bool]:
    from tstoraged.config import load_config
    from tstoraged.observe.logging import configure_logging
    from tstoraged.plugins import PluginManager
    from tstoraged.runtime.app import Daemon

    plugins = PluginManager.from_entry_points()
    settings = load_config(config_file, plugins=plugins)
    configure_logging("warning", "console", stream=sys.stderr)
    daemon = Daemon(settings, plugins, config_path=config_file, configure_logs=False)
    task = asyncio.create_task(daemon.run())
    if drop_dir is not None:
        await asyncio.to_thread(_drop_files, drop_dir, data_files)
    deadline = time.monotonic() + wait_s
    written: dict[str, int] = {}
    last = ""
    while time.monotonic() < deadline and not task.done():
        sources = daemon.metrics.snapshot()["sources"]
        written = {name: sources.get(name, {}).get("written", 0) for name in expected}
        line = "  ".join(f"{name}: {written[name]}/{total}" for name, total in expected.items())
        if line != last:
            print(f"  written  {line}")
            last = line
        if all(written[name] >= total for name, total in expected.items()):
            break
        await asyncio.sleep(0.25)
    daemon.request_stop()
    result = await task
    return written, result.exit_code == 0


def _read_back(port: int, config: dict[str, Any]) -> None:
    from tstorage_client.channel import Channel
    from tstorage_client.payload_type import BytesPayloadType, TuplePayloadType
    from tstorage_client.record import Key, Record
    from tstorage_client.timestamp import Tstoragedatetime

    with Channel("127.0.0.1", port, BytesPayloadType()) as channel:
        for source in config.get("sources", []):
            cid = source["key"]["cid"]
            fmt = source["payload"]["format"]
            box_min = Key(cid, Key.min().mid, Key.min().moid, Key.min().cap, Key.min().acq)
            box_max = Key(cid + 1, Key.max().mid, Key.max().moid, Key.max().cap, Key.max().acq)
            count, first = 0, list[Record[bytes]]()
            for item in channel.get_iter(box_min, box_max):
                if not isinstance(item, Record):  # the final response
                    if not item:
                        print(f"\n  reading cid {cid} back failed: {item.status.name}")
                    break
                count += 1
                if len(first) < 3:
                    first.append(item)
            decode = TuplePayloadType(fmt)
            print(f"\n  {source['name']} (cid {cid}): {count} records in TStorage; the first 3:")
            for record in first:
                key = record.key
                when = Tstoragedatetime.from_tstorage_ns(key.cap).datetime.isoformat()
                print(
                    f"    mid={key.mid} moid={key.moid} cap={when} "
                    f"payload {fmt} = {decode.from_bytes(record.value)}"
                )


def _run(args: argparse.Namespace) -> int:
    from tstorage_server.testing import ServerProcess

    config = tomllib.loads(args.config.read_text())
    data_files = sorted(args.data.glob("*.csv")) if args.data.is_dir() else []
    with ExitStack() as stack:
        work = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        print("Starting the embedded TStorage server (in memory) ...")
        server = stack.enter_context(ServerProcess())
        print(f"  tstorage-server listening on 127.0.0.1:{server.port}")
        config, drop_dir = _prepare(config, work, server.port)
        config_file = work / "demo.toml"
        config_file.write_text(_toml(config))
        expected = _expected(config, data_files)
        print(f"Running tstoraged on {args.config.name}: sources {', '.join(expected)}")
        written, clean = asyncio.run(
            _run_daemon(config_file, drop_dir, data_files, expected, args.timeout)
        )
        print("tstoraged stopped (graceful drain)." if clean else "tstoraged stopped with errors.")
        print("Reading back with tstorage_client:")
        _read_back(server.port, config)
        missing = {n: t - written.get(n, 0) for n, t in expected.items() if written.get(n, 0) < t}
        if missing:
            print(f"\nFAILED: records missing: {missing}")
            return EXIT_FAILURE
        print(f"\nOK: all {sum(expected.values())} records arrived.")
        return EXIT_OK


COMMAND = Subcommand(
    name="demo",
    help="run the embedded server and the daemon on the demo config; show the data arrive",
    add_arguments=_add_arguments,
    run=_run,
)
