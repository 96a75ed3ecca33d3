"""The ``quarantine/`` directory: damaged segment files kept for inspection, with reasons.

Each entry is the segment file (a hard link or copy, so the spool can go on delivering the
intact frames of the live file) and ``<file>.reason.json`` saying what was wrong.  Entries
stay until an operator deletes them; listing them never fails on malformed reason files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time

from tstoraged.spool.diskio import DiskIO
from tstoraged.spool.reports import QuarantinedSegment

REASON_SUFFIX = ".reason.json"


class Quarantine:
    """Puts damaged segments aside and lists what has been put aside."""

    def __init__(self, spool_dir: str, disk: DiskIO) -> None:
        self.directory = os.path.join(spool_dir, "quarantine")
        self._disk = disk

    def add(self, segment_path: str, reason: str, *, move: bool) -> QuarantinedSegment:
        """Keep a copy of ``segment_path`` (or move it, if ``move``) with ``reason``."""
        os.makedirs(self.directory, exist_ok=True)
        now = time.time()
        base = os.path.basename(segment_path)
        target = os.path.join(self.directory, f"{base}.{time.time_ns()}")
        if move:
            os.replace(segment_path, target)
        else:
            try:
                os.link(segment_path, target)
            except OSError:
                # File systems without hard links (FAT on an SD card): pay for a copy.
                shutil.copyfile(segment_path, target)
        record = {"segment": base, "reason": reason, "quarantined_at": now}
        self._disk.replace_atomically(target + REASON_SUFFIX, json.dumps(record).encode())
        return QuarantinedSegment(target, reason, now)

    def find(self, segment_path: str) -> QuarantinedSegment | None:
        """The entry that is a hard link of ``segment_path`` (quarantined earlier), if any."""
        base = os.path.basename(segment_path)
        for entry in self.list():
            if os.path.basename(entry.file).startswith(base + "."):
                with contextlib.suppress(OSError):
                    if os.path.samefile(entry.file, segment_path):
                        return entry
        return None

    def list(self) -> tuple[QuarantinedSegment, ...]:
        """Every quarantined segment, oldest first."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return ()
        found = []
        for name in names:
            if not name.endswith(REASON_SUFFIX):
                continue
            path = os.path.join(self.directory, name)
            reason, when = "unreadable reason file", 0.0
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                with open(path, "rb") as f:
                    record = json.loads(f.read(65536))
                reason, when = str(record["reason"]), float(record["quarantined_at"])
            found.append(QuarantinedSegment(path[: -len(REASON_SUFFIX)], reason, when))
        return tuple(sorted(found, key=lambda q: q.quarantined_at))
