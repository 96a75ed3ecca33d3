"""File identity: which content a file descriptor holds, independent of its name.

Device and inode say which file it is *now*; a hash of its leading bytes (the fingerprint)
says which content it holds, so a reused inode or a truncated-and-rewritten file is not
mistaken for the old one, and a copy of a rotated file is recognised as already read.
A file shorter than the fingerprint length gets a fingerprint of what it has; as it grows the
fingerprint is extended once its old prefix is confirmed unchanged.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

__all__ = ["Fingerprint", "fingerprint_of", "read_fingerprint"]


@dataclass(frozen=True)
class Fingerprint:
    """A hash of a file's first ``length`` bytes."""

    length: int
    digest: str

    def matches(self, fd: int) -> bool:
        """True when the file behind ``fd`` still starts with the fingerprinted bytes."""
        head = os.pread(fd, self.length, 0)
        return len(head) == self.length and _digest(head) == self.digest

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {"length": self.length, "digest": self.digest}

    @classmethod
    def from_json(cls, data: object) -> Fingerprint:
        """The inverse of :meth:`to_json`."""
        if not isinstance(data, dict):
            raise ValueError(f"bad fingerprint {data!r}")
        return cls(int(data["length"]), str(data["digest"]))


def read_fingerprint(fd: int, limit: int) -> Fingerprint:
    """The fingerprint of the first ``limit`` bytes (or all of a shorter file)."""
    return fingerprint_of(os.pread(fd, limit, 0))


def fingerprint_of(head: bytes) -> Fingerprint:
    """The fingerprint of a file starting with ``head``."""
    return Fingerprint(len(head), _digest(head))


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
