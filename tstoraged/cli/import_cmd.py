"""tstoraged import FILE...: ingest files once (backfill), with progress and a summary.

The files are read like a configured files source reads them (same format, CSV options and
mapping, taken from the source named by --source, or the only files source of the config)
and written to the config's TStorage target. --format records reads the client's record CSV
(cid,mid,moid,cap,hexpayload, with or without a header line) and needs no source.

Positions are checkpointed under the state directory (sources/import-<source>), so an
interrupted import run again resumes after the last acknowledged line, and a file imported to
its end is skipped (and said so) unless --force is given. The import writes directly to
TStorage (no spool) and does not open the metrics port, so it can run next to the daemon.
Exit status: 0 when every line was delivered, 1 when a file failed, a line was rejected, or
records could not be delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tstoraged.cli import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, Subcommand
from tstoraged.cli._common import add_config_argument, load_settings

if TYPE_CHECKING:
    from tstoraged.config import Settings
    from tstoraged.plugins import PluginManager
    from tstoraged.runtime.app import Daemon
    from tstoraged.source import SourceConfig


class ImportSetupError(Exception):
    """The command line and config do not describe an import; the message says why."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="files to import")
    parser.add_argument(
        "--source", help="read the files like this configured files source (format, mapping)"
    )
    parser.add_argument(
        "--format",
        choices=("records",),
        help="records: the client's record CSV (cid,mid,moid,cap,hexpayload); no source needed",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="import files again that an earlier import read to their end",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar: on a terminal (auto), always, or never",
    )


def _template(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The settings of the files source the import reads like, as raw config data."""
    if args.format == "records":
        return {"type": "files", "name": "records", "format": "records"}
    files = [source for source in settings.sources if source.type == "files"]
    if args.source is not None:
        chosen = [source for source in settings.sources if source.name == args.source]
        if not chosen:
            raise ImportSetupError(f"no source named {args.source!r} in the config")
        if chosen[0].type != "files":
            raise ImportSetupError(
                f"source {args.source!r} is of type {chosen[0].type!r}, not files"
            )
        source: SourceConfig = chosen[0]
    elif len(files) == 1:
        source = files[0]
    else:
        names = ", ".join(s.name for s in files) or "none"
        raise ImportSetupError(
            f"name the files source to read like with --source (files sources: {names}), "
            "or use --format records"
        )
    # Python mode: secret and sensitive values stay values (a JSON dump masks them).
    return source.model_dump(exclude_unset=True)


def _import_settings(
    settings: Settings, plugins: PluginManager, args: argparse.Namespace
) -> Settings:
    """The config for a one-shot daemon: one files source in once mode, no spool, no port."""
    template = _template(settings, args)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise ImportSetupError(f"not a file: {', '.join(missing)}")
    for key in ("mode", "paths", "directory", "pattern", "start_at", "enabled"):
        template.pop(key, None)
    template.update(
        name=f"import-{template['name']}",
        mode="once",
        ignore_checkpoints=args.force,
        # Glob characters in a file name must not turn it into a pattern.
        paths=[_escape_glob(str(f.resolve())) for f in args.files],
    )
    source_type = plugins.source_types["files"]
    source = source_type.config_model.model_validate(template)
    return settings.model_copy(
        update={
            "sources": (source,),
            "spool": settings.spool.model_copy(update={"enabled": False}),
            "metrics": settings.metrics.model_copy(update={"enabled": False}),
        }
    )


def _escape_glob(path: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


async def _run_import(daemon: Daemon, show_progress: bool) -> tuple[int, Any]:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    task = asyncio.create_task(daemon.run())
    name = daemon.settings.sources[0].name
    progress_view = Progress(
        TextColumn("[bold]importing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[records]} records, {task.fields[rate]} rec/s"),
        TimeRemainingColumn(),
        disable=not show_progress,
        transient=False,
    )
    started = time.monotonic()
    with progress_view:
        bar = progress_view.add_task("import", total=None, records=0, rate=0)
        while not task.done():
            source = daemon.sources.get(name)
            worker = getattr(source, "worker", None)
            state = getattr(worker, "progress", None)
            if state is not None:
                elapsed = max(time.monotonic() - started, 1e-9)
                progress_view.update(
                    bar,
                    total=state.bytes_total or None,
                    completed=state.bytes_done,
                    records=state.records,
                    rate=int(state.records / elapsed),
                )
            await asyncio.wait({task}, timeout=0.2)
    result = await task
    source = daemon.sources.get(name)
    return result.exit_code, getattr(getattr(source, "worker", None), "progress", None)


def _run(args: argparse.Namespace) -> int:
    from tstoraged.observe.logging import configure_logging
    from tstoraged.runtime.app import Daemon
    from tstoraged.runtime.startup import StartupError

    settings, plugins = load_settings(args)
    try:
        settings = _import_settings(settings, plugins, args)
    except (ImportSetupError, ValueError) as exc:
        print(f"tstoraged import: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    configure_logging("warning", "console" if sys.stderr.isatty() else "json", stream=sys.stderr)
    daemon = Daemon(settings, plugins, once=True, configure_logs=False)
    started = time.monotonic()
    try:
        code, state = asyncio.run(_run_import(daemon, show))
    except StartupError as exc:
        print(f"tstoraged import: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    elapsed = time.monotonic() - started
    source = settings.sources[0].name
    stats = daemon.metrics.snapshot()["sources"].get(source, {})
    written = stats.get("written", 0)
    records = state.records if state is not None else 0
    print(
        f"imported {len(args.files)} file(s): {records} records read, {written} written to "
        f"{settings.tstorage.host}:{settings.tstorage.port} in {elapsed:.1f} s "
        f"({written / max(elapsed, 1e-9):,.0f} records/s)"
    )
    failed = False
    checkpoints = settings.daemon.state_dir / "sources" / source
    for path, reason in state.skipped if state is not None else []:
        if reason == "empty":
            print(f"skipped {path}: empty")
        else:
            print(
                f"skipped {path}: {reason}, as its checkpoint in {checkpoints} says; "
                "--force imports it again"
            )
    for path, line in state.resumed if state is not None else []:
        print(f"resumed {path} after line {line} (imported up to there before)")
    if state is not None and state.rejected:
        failed = True
        print(f"{state.rejected} lines rejected (see `tstoraged dead-letters show`)")
    if state is not None:
        for path, reason in state.failed:
            failed = True
            print(f"failed: {path}: {reason}")
    if written < records or stats.get("dead_lettered", 0):
        failed = True
        print(f"{records - written} records not delivered (see the log and dead letters)")
    return EXIT_FAILURE if failed or code != 0 else EXIT_OK


COMMAND = Subcommand(
    name="import",
    help="ingest files once (backfill) with a progress bar and a summary",
    description=__doc__,
    add_arguments=_add_arguments,
    run=_run,
)
