"""The dead-letter file: records and inputs that could not be delivered, with the reason.

JSON Lines in the state directory (``dead-letter.jsonl``), one object per record or rejected
input::

    {"time": "2026-01-02T03:04:05.678901Z", "source": "line-3", "origin": "/data/a.csv:17",
     "reason": "...", "key": {"cid": 1, "mid": 2, "moid": 3, "cap": 4, "acq": -1},
     "payload_hex": "0a000000"}
    {"time": "...", "source": "mqtt", "origin": "plant/7/temp", "reason": "...", "raw": "text"}
    {"time": "...", "source": "mqtt", "origin": "...", "reason": "...", "raw_base64": "AAEC"}

Every write is flushed to the OS at once; :meth:`DeadLetterFile.sync` makes it durable
(fsync, only when something new was written). Whoever fires acks calls ``sync`` first: the
writer does before every batch's acks (so a record it dead-lettered, and a reject a source
wrote before an emit, are on disk before that emit's ack), and so must a spool that fires
acks itself. That is one fsync per batch, however many entries, instead of one per bad line.
When the file would grow past ``max_bytes`` it is rotated to ``dead-letter.jsonl.1``
(replacing the previous one), so the disk use stays below about twice the bound.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tstorage_client.record import Key, Record

__all__ = ["DEAD_LETTER_FILE", "DeadLetter", "DeadLetterFile", "iter_dead_letters"]

DEAD_LETTER_FILE = "dead-letter.jsonl"
"""File name of the dead-letter file inside the state directory."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(time: dt.datetime) -> str:
    return time.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _key_json(key: object) -> dict[str, object] | str:
    try:
        return dict(zip(Key._fields, key, strict=True))  # type: ignore[call-overload]
    except TypeError:
        return repr(key)


class DeadLetterFile:
    """Appends dead letters to ``path`` with size-bounded rotation."""

    def __init__(
        self,
        path: Path | str,
        max_bytes: int = 64 * 1024 * 1024,
        *,
        now: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._now = now
        self._file: IO[bytes] | None = None
        self._dirty = False

    @classmethod
    def in_state_dir(
        cls, state_dir: Path | str, max_bytes: int = 64 * 1024 * 1024
    ) -> DeadLetterFile:
        """The dead-letter file of a state directory."""
        return cls(Path(state_dir) / DEAD_LETTER_FILE, max_bytes)

    def write_records(
        self,
        entries: Iterable[tuple[str, Record[bytes]]],
        reason: str,
        *,
        origin: str | None = None,
    ) -> int:
        """Dead-letter ``(source, record)`` pairs with one reason; returns how many."""
        time = _iso(self._now())
        lines = []
        for source, record in entries:
            key, payload = record.key, record.value
            entry: dict[str, object] = {
                "time": time,
                "source": source,
                "origin": origin,
                "reason": reason,
                "key": _key_json(key),
            }
            if isinstance(payload, bytes | bytearray | memoryview):
                entry["payload_hex"] = bytes(payload).hex()
            else:
                entry["payload_repr"] = repr(payload)
            lines.append(json.dumps(entry, default=repr))
        self._append(lines)
        return len(lines)

    def write_raw(self, source: str, raw: object, reason: str, *, origin: str | None) -> None:
        """Dead-letter an input that never became a record (text, bytes, or anything else)."""
        entry: dict[str, object] = {
            "time": _iso(self._now()),
            "source": source,
            "origin": origin,
            "reason": reason,
        }
        if isinstance(raw, bytes | bytearray | memoryview):
            entry["raw_base64"] = base64.b64encode(bytes(raw)).decode("ascii")
        elif isinstance(raw, str):
            entry["raw"] = raw
        else:
            entry["raw"] = repr(raw)
        self._append([json.dumps(entry, default=repr)])

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode()
        file = self._open()
        if file.tell() and file.tell() + len(data) > self.max_bytes:
            file = self._rotate()
        file.write(data)
        file.flush()
        self._dirty = True

    def sync(self) -> None:
        """Make every entry written so far durable (fsync); cheap when there is nothing new."""
        if self._dirty and self._file is not None:
            os.fsync(self._file.fileno())
        self._dirty = False

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
        return self._file

    def _rotate(self) -> IO[bytes]:
        self.close()  # syncs what the old file holds
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        return self._open()

    def close(self) -> None:
        """Sync and close the file (it is reopened by the next write)."""
        self.sync()
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the dead-letter file, as read back."""

    time: str
    source: str
    origin: str | None
    reason: str
    key: dict[str, object] | None = None
    payload: bytes | None = None
    raw: str | bytes | None = None

    def record(self) -> Record[bytes] | None:
        """The dead-lettered record (for replay after a fix), or None for raw input."""
        if self.key is None or self.payload is None:
            return None
        parts = tuple(self.key[name] for name in Key._fields)
        return Record(Key(*parts), self.payload)  # type: ignore[arg-type]


def _parse(entry: dict[str, object]) -> DeadLetter:
    key = entry.get("key")
    payload_hex = entry.get("payload_hex")
    raw: str | bytes | None = None
    if "raw_base64" in entry:
        raw = base64.b64decode(str(entry["raw_base64"]))
    elif "raw" in entry:
        raw = str(entry["raw"])
    origin = entry.get("origin")
    return DeadLetter(
        time=str(entry.get("time", "")),
        source=str(entry.get("source", "")),
        origin=None if origin is None else str(origin),
        reason=str(entry.get("reason", "")),
        key=key if isinstance(key, dict) else None,
        payload=bytes.fromhex(payload_hex) if isinstance(payload_hex, str) else None,
        raw=raw,
    )


def iter_dead_letters(path: Path | str) -> Iterator[DeadLetter]:
    """Entries of a dead-letter file, oldest first (the rotated ``.1`` file before it).

    A line that is not a JSON object (a write torn by power loss) is skipped.
    """
    path = Path(path)
    for part in (path.with_name(path.name + ".1"), path):
        if not part.exists():
            continue
        with open(part, "rb") as file:
            for line in file:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield _parse(entry)
