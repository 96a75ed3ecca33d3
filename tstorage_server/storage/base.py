"""The storage contract: what the connection handler needs from a backend."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator

from tstorage_client.record import Key
from tstorage_server.acq import AcqClock
from tstorage_server.rules import Rows

__all__ = ["NO_ACQ_RANGE", "PutTransaction", "Storage"]

NO_ACQ_RANGE = (-1, -1)
"""The acq range a PUT reports when it assigned none (PUTA, or nothing stored)."""


class PutTransaction(abc.ABC):
    """One PUT / PUTA request: all of its records become visible together, or none do.

    ``add`` may be called any number of times; then exactly one of ``commit`` or ``rollback``.
    """

    @abc.abstractmethod
    async def add(self, cid: int, rows: Rows) -> None:
        """Add storable rows of one cid (already filtered by the server rules).

        Rows are PUT rows for a PUT transaction and PUTA rows for a PUTA one: decoded row
        tuples, or a :class:`~tstorage_client.protocol.server.RecordRun` still in wire form.
        """

    @abc.abstractmethod
    async def commit(self) -> tuple[int, int]:
        """Make the records durable and visible; return the acq range assigned (PUT) or -1, -1."""

    @abc.abstractmethod
    async def rollback(self) -> None:
        """Discard everything added; never raises."""


class Storage(abc.ABC):
    """A record store keyed by the full 5-part key (upsert: last write wins)."""

    clock: AcqClock

    @abc.abstractmethod
    def begin_put(self, with_acq: bool) -> PutTransaction:
        """Start a PUT (server assigns acq) or PUTA (``with_acq``: the client's acq is kept)."""

    @abc.abstractmethod
    def read(self, key_min: Key, key_max: Key) -> AsyncGenerator[bytes, None]:
        """Encoded GET record frames for the box, in key order, a bounded chunk at a time.

        The iterator must be closed (``aclose``) when abandoned, to release its resources.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and close; no other method is called afterwards."""
