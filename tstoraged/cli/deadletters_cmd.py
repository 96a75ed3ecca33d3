"""``tstoraged dead-letters show|replay``: look at what could not be delivered, and retry it.

``show`` lists the entries of the dead-letter file (records TStorage refused or that gave up
retrying, and source input that could not be parsed or mapped), newest last, with a summary
per source and reason. ``replay`` sends the dead-lettered *records* to TStorage again, after
the cause is fixed: put for records whose acq was unset, puta for records whose acq the daemon
had assigned (so a replay overwrites instead of duplicating). Raw input is listed but not
replayed: fix the data and ingest it again (e.g. with ``tstoraged import``).

The dead-letter file itself is never rewritten (a running daemon appends to it). What was
replayed is remembered in ``<file>.replayed`` (one fingerprint per entry), so a second replay
skips it and ``show`` hides it unless ``--all`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tstoraged.cli import EXIT_FAILURE, EXIT_OK, Subcommand
from tstoraged.cli._common import add_config_argument, load_settings

if TYPE_CHECKING:
    from tstoraged.config import Settings
    from tstoraged.pipeline.deadletter import DeadLetter

REPLAY_CHUNK = 10_000


def fingerprint(entry: DeadLetter) -> str:
    """A stable identity of one dead-letter entry."""
    parts = [
        entry.time,
        entry.source,
        entry.origin or "",
        entry.reason,
        json.dumps(entry.key, sort_keys=True),
        (entry.payload or b"").hex(),
        entry.raw.hex() if isinstance(entry.raw, bytes) else str(entry.raw),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def replayed_path(path: Path) -> Path:
    """Where the fingerprints of replayed entries are kept."""
    return path.with_name(path.name + ".replayed")


def load_replayed(path: Path) -> set[str]:
    """Fingerprints of entries replayed earlier."""
    marks = replayed_path(path)
    if not marks.exists():
        return set()
    return {line.strip() for line in marks.read_text().splitlines() if line.strip()}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    show = actions.add_parser("show", help="list dead-lettered records and inputs")
    replay = actions.add_parser("replay", help="send dead-lettered records to TStorage again")
    for sub in (show, replay):
        add_config_argument(sub)
        sub.add_argument("--file", type=Path, help="dead-letter file (default: from the config)")
        sub.add_argument("--source", help="only entries of this source")
        sub.add_argument("--reason", help="only entries whose reason contains this text")
    show.add_argument("--json", action="store_true", help="one JSON object per entry")
    show.add_argument("--limit", type=int, default=50, help="show the last N entries (0: all)")
    show.add_argument("--all", action="store_true", help="include entries already replayed")
    replay.add_argument(
        "--dry-run", action="store_true", help="say what would be replayed, send nothing"
    )


def _select(args: argparse.Namespace, path: Path, include_replayed: bool) -> list[DeadLetter]:
    from tstoraged.pipeline.deadletter import iter_dead_letters

    done = set() if include_replayed else load_replayed(path)
    chosen = []
    for entry in iter_dead_letters(path):
        if args.source and entry.source != args.source:
            continue
        if args.reason and args.reason not in entry.reason:
            continue
        if fingerprint(entry) in done:
            continue
        chosen.append(entry)
    return chosen


def _entry_json(entry: DeadLetter) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": entry.time,
        "source": entry.source,
        "origin": entry.origin,
        "reason": entry.reason,
    }
    if entry.key is not None:
        out["key"] = entry.key
        out["payload_hex"] = (entry.payload or b"").hex()
    elif isinstance(entry.raw, bytes):
        out["raw_hex"] = entry.raw.hex()
    else:
        out["raw"] = entry.raw
    return out


def _show(args: argparse.Namespace, path: Path) -> int:
    entries = _select(args, path, include_replayed=args.all)
    shown = entries[-args.limit :] if args.limit > 0 else entries
    if args.json:
        for entry in shown:
            print(json.dumps(_entry_json(entry)))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"dead letters in {path} ({len(shown)} of {len(entries)} shown)")
    for column in ("time", "source", "origin", "reason", "what"):
        table.add_column(column, overflow="fold")
    for entry in shown:
        if entry.key is not None:
            key = entry.key
            what = f"key {key.get('cid')}/{key.get('mid')}/{key.get('moid')}/{key.get('cap')}"
        else:
            what = repr(entry.raw)[:80]
        table.add_row(entry.time, entry.source, entry.origin or "", entry.reason, what)
    console = Console()
    console.print(table)
    summary = collections.Counter((e.source, e.reason.split(":", 1)[0]) for e in entries)
    for (source, reason), count in summary.most_common():
        console.print(f"{count:>8}  {source}: {reason}")
    return EXIT_OK


async def _put_all(settings: Settings, entries: Iterable[DeadLetter]) -> tuple[list[str], str]:
    """Put the records of ``entries``; returns fingerprints delivered and an error, if any."""
    from tstorage_client.channel_async import AsyncChannel
    from tstorage_client.payload_type import BytesPayloadType
    from tstoraged.runtime.wiring import target_settings

    target = target_settings(settings)
    pending = [(fingerprint(e), record) for e in entries if (record := e.record()) is not None]
    delivered: list[str] = []
    channel: AsyncChannel[bytes] = AsyncChannel(
        target.host,
        target.port,
        BytesPayloadType(),
        timeout=target.timeout,
        ssl_context=target.ssl_context,
    )
    async with channel:
        for start in range(0, len(pending), REPLAY_CHUNK):
            chunk = pending[start : start + REPLAY_CHUNK]
            for with_acq in (False, True):
                part = [(f, r) for f, r in chunk if (r.key.acq != -1) == with_acq]
                if not part:
                    continue
                records = [record for _, record in part]
                put = channel.puta if with_acq else channel.put
                response = await put(records)
                if not response.is_ok():
                    return delivered, f"TStorage answered {response.status.name}"
                delivered += [f for f, _ in part]
    return delivered, ""


def _replay(args: argparse.Namespace, path: Path, settings: Settings) -> int:
    entries = _select(args, path, include_replayed=False)
    records = [e for e in entries if e.record() is not None]
    raw = len(entries) - len(records)
    target = f"{settings.tstorage.host}:{settings.tstorage.port}"
    if args.dry_run:
        print(f"would replay {len(records)} records to {target}; {raw} raw inputs not replayable")
        return EXIT_OK
    try:
        delivered, error = asyncio.run(_put_all(settings, records))
    except OSError as exc:
        delivered, error = [], f"cannot reach TStorage at {target}: {exc}"
    if delivered:
        with replayed_path(path).open("a") as marks:
            marks.write("".join(f"{mark}\n" for mark in delivered))
    print(f"replayed {len(delivered)} of {len(records)} records to {target}")
    if raw:
        print(f"{raw} raw inputs are not replayable: fix the data and ingest it again")
    if error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _none(path: Path | None) -> int:
    print(f"no dead letters: {path} does not exist")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    if args.action == "show" and args.file is not None:
        # Looking at a copied file needs no config.
        return _show(args, args.file) if args.file.exists() else _none(args.file)
    settings, _ = load_settings(args)
    path = args.file or settings.daemon.dead_letter.file
    if path is None or not (path.exists() or path.with_name(path.name + ".1").exists()):
        return _none(path)
    if args.action == "show":
        return _show(args, path)
    return _replay(args, path, settings)


COMMAND = Subcommand(
    name="dead-letters",
    help="show dead-lettered records and inputs, or replay the records after a fix",
    description=__doc__,
    add_arguments=_add_arguments,
    run=_run,
)
