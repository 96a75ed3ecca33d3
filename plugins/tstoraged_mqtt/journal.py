"""The delivery journal: which QoS 1 messages are durable, known again after a crash.

Between the moment a message's records are durable and the moment the broker has read its
PUBACK there is a window; a crash in it makes the broker send the message again, and its
records would be stored twice (``puta`` does not help: the new copy is a new arrival). So:

- before a run of messages is handed to the pipeline, ``e <seq> <packet id> <digest>`` lines
  name them under an emit sequence number (a plain ``write``: it survives ``kill -9``);
- the emit carries ``checkpoint={"mqtt-emit": seq}``: with the spool on, the core stores it in
  the same durable write as the records, so after a crash the spool says exactly which emits
  were durable; without the spool, an ``a <seq>`` line is written when the ack comes.

After a restart, a message the broker sends again (DUP flag) whose packet id and digest of
topic and payload belong to a durable emit is acknowledged without being stored again.

Only used when the key is deterministic (``cap`` from the payload): a packet id whose PUBACK
did arrive may be reused by the broker, and a new message with the same id, topic and payload
is then skipped too, which is harmless only when it maps to the same key as the stored one.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

__all__ = ["CHECKPOINT", "AckJournal", "digest"]

JOURNAL_FILE = "delivery.journal"
CHECKPOINT = "mqtt-emit"
"""The name of the source's position in ``emit(..., checkpoint=...)``."""


def digest(topic: str, payload: bytes) -> int:
    """A cheap fingerprint of a message (CRC-32 of topic and payload, with the length)."""
    return (zlib.crc32(payload, zlib.crc32(topic.encode())) << 32) | (len(payload) & 0xFFFFFFFF)


class AckJournal:
    """Append-only journal lines under a ``client_id`` header, rotated to stay small."""

    def __init__(self, directory: Path, client_id: str | None, keep: int) -> None:
        self.path = directory / JOURNAL_FILE
        self.client_id = client_id or ""
        self.keep = keep
        self.next_seq = 1
        self._fd: int | None = None
        self._lines = 0
        self._recent: list[bytes] = []
        self._last_ack = b""

    def load(self, durable_seq: int = 0) -> dict[int, int]:
        """Packet id -> digest of the durable messages a previous run journaled.

        ``durable_seq`` is the latest emit the core knows durable (the spool's checkpoint);
        ``a`` lines count too. Also sets :attr:`next_seq` past everything seen.
        """
        try:
            lines = self.path.read_bytes().splitlines()
        except OSError:
            return {}
        if not lines or lines[0].decode(errors="replace") != f"client_id {self.client_id}":
            return {}
        emitted: list[tuple[int, int, int]] = []
        for line in lines[1:]:
            parts = line.split()
            if not all(part.isdigit() for part in parts[1:]):
                continue  # a torn last line
            if parts[:1] == [b"e"] and len(parts) == 4:
                emitted.append((int(parts[1]), int(parts[2]), int(parts[3])))
            elif parts[:1] == [b"a"] and len(parts) == 2:
                durable_seq = max(durable_seq, int(parts[1]))
        self.next_seq = max([durable_seq, *(seq for seq, _, _ in emitted)]) + 1
        return {mid: fingerprint for seq, mid, fingerprint in emitted if seq <= durable_seq}

    def emitted(self, seq: int, entries: list[tuple[int, int]]) -> None:
        """Journal ``(packet id, digest)`` entries about to be emitted as emit ``seq``."""
        if entries:
            self._write([b"e %d %d %d\n" % (seq, mid, fingerprint) for mid, fingerprint in entries])

    def acknowledged(self, seq: int) -> None:
        """Emit ``seq`` (and every one before it) is durable."""
        self._last_ack = b"a %d\n" % seq
        self._write([self._last_ack])

    def _write(self, data: list[bytes]) -> None:
        if self._fd is None or self._lines + len(data) > 4 * self.keep:
            self._rotate(data)
            return
        os.write(self._fd, b"".join(data))
        self._lines += len(data)
        if data[0][:1] == b"e":
            self._recent += data
            if len(self._recent) > 2 * self.keep:
                del self._recent[: -self.keep]

    def _rotate(self, data: list[bytes]) -> None:
        """Start a new file with the header, the latest entries and the latest ack."""
        if data[0][:1] == b"e":
            self._recent += data
        self._recent = self._recent[-self.keep :]
        temporary = self.path.with_suffix(".tmp")
        header = f"client_id {self.client_id}\n".encode()
        temporary.write_bytes(header + b"".join(self._recent) + self._last_ack)
        os.replace(temporary, self.path)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(self._recent) + 1

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
