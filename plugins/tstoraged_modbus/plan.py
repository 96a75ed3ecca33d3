"""Read planning: which requests read a poll group's points (no I/O).

Points of one table are coalesced into as few requests as the protocol allows: sorted by
address, a point joins the current request while the unread addresses before it are at most
``max_gap`` and the request stays within ``max_registers`` (at most 125) or ``max_bits``
(at most 2000). A device that refuses a request (illegal data address, illegal data value)
teaches the plan: :meth:`ReadPlan.split` cuts the request at its widest gap between points
(where an unmapped address most likely is), remembers the cut so later plans never coalesce
across it, and a single point that is refused on its own is excluded until it is retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from tstoraged_modbus.datatypes import BIT_TABLES, Table

__all__ = ["MAX_READ_BITS", "MAX_READ_REGISTERS", "PlannedPoint", "Read", "ReadPlan", "plan_reads"]

MAX_READ_REGISTERS: Final = 125
"""Registers one read request may ask for (Modbus application protocol, FC 3 and 4)."""
MAX_READ_BITS: Final = 2000
"""Coils or discrete inputs one read request may ask for (FC 1 and 2)."""

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class PlannedPoint(Generic[P]):
    """A point as the planner sees it: where it is, how wide, and what it is."""

    table: Table
    address: int
    """Protocol (0-based) address of its first register or bit."""
    width: int
    """Registers (or bits) it takes."""
    point: P

    @property
    def end(self) -> int:
        """The address after its last register or bit."""
        return self.address + self.width


@dataclass(frozen=True, slots=True)
class Read(Generic[P]):
    """One read request and the points it serves (with each point's offset into it)."""

    table: Table
    address: int
    count: int
    points: tuple[PlannedPoint[P], ...]

    @property
    def end(self) -> int:
        """The address after the last one read."""
        return self.address + self.count


def plan_reads(
    points: Iterable[PlannedPoint[P]],
    *,
    max_gap: int,
    max_registers: int = MAX_READ_REGISTERS,
    max_bits: int = MAX_READ_BITS,
    cuts: frozenset[tuple[Table, int]] = frozenset(),
) -> list[Read[P]]:
    """Coalesce ``points`` into reads (ordered by table, then address).

    ``cuts`` are ``(table, address)`` pairs no read may span: a read never holds both a point
    starting before ``address`` and one starting at or after it.
    """
    by_table: dict[Table, list[PlannedPoint[P]]] = {}
    for point in points:
        by_table.setdefault(point.table, []).append(point)
    reads: list[Read[P]] = []
    for table in sorted(by_table):
        limit = max_bits if table in BIT_TABLES else max_registers
        members = sorted(by_table[table], key=lambda p: (p.address, p.width))
        cut_addresses = sorted(address for cut_table, address in cuts if cut_table == table)
        current: list[PlannedPoint[P]] = []
        start = end = 0
        for point in members:
            if current and (
                point.address - end > max_gap
                or max(end, point.end) - start > limit
                or _cut_between(cut_addresses, current[-1].address, point.address)
            ):
                reads.append(Read(table, start, end - start, tuple(current)))
                current = []
            if not current:
                start, end = point.address, point.end
            current.append(point)
            end = max(end, point.end)
        if current:
            reads.append(Read(table, start, end - start, tuple(current)))
    return reads


def _cut_between(cuts: Sequence[int], previous: int, address: int) -> bool:
    """A cut lies in ``(previous, address]``: the two points may not share a read."""
    return any(previous < cut <= address for cut in cuts)


@dataclass
class ReadPlan(Generic[P]):
    """The reads of one poll group, re-planned as the device teaches where its holes are."""

    points: tuple[PlannedPoint[P], ...]
    max_gap: int
    max_registers: int = MAX_READ_REGISTERS
    max_bits: int = MAX_READ_BITS
    cuts: set[tuple[Table, int]] = field(default_factory=set)
    """Learned: addresses no read may span."""
    refused: set[int] = field(default_factory=set)
    """Learned: indexes (into :attr:`points`) of points the device refuses on their own."""
    _reads: list[Read[P]] | None = None

    @property
    def reads(self) -> list[Read[P]]:
        """The reads to send for the points not currently refused."""
        if self._reads is None:
            self._reads = plan_reads(
                (point for index, point in enumerate(self.points) if index not in self.refused),
                max_gap=self.max_gap,
                max_registers=self.max_registers,
                max_bits=self.max_bits,
                cuts=frozenset(self.cuts),
            )
        return self._reads

    def split(self, read: Read[P]) -> tuple[Read[P], Read[P]]:
        """Cut a refused read of several points in two, and remember the cut.

        The cut goes before the point that follows the widest gap (an unmapped address is
        most likely there); without gaps, in the middle.
        """
        members = read.points
        # A cut may go before any point that starts after every earlier point ends (points
        # that overlap, like bits of one register, stay together).
        candidates: list[tuple[int, int]] = []  # (gap before the point, index)
        reach = members[0].end
        for index in range(1, len(members)):
            if members[index].address >= reach:
                candidates.append((members[index].address - reach, index))
            reach = max(reach, members[index].end)
        if not candidates:
            raise ValueError("the points of this read overlap: it cannot be split")
        middle = len(members) / 2
        _, best = max(candidates, key=lambda c: (c[0], -abs(c[1] - middle)))
        cut = members[best].address
        self.cuts.add((read.table, cut))
        self._reads = None
        return _read_of(read.table, members[:best]), _read_of(read.table, members[best:])

    def refuse(self, point: PlannedPoint[P]) -> None:
        """Exclude a point the device refuses on its own (until :meth:`retry_refused`)."""
        self.refused.add(self.points.index(point))
        self._reads = None

    def retry_refused(self) -> list[PlannedPoint[P]]:
        """Take the refused points back into the plan (read alone: cuts on both sides)."""
        points = [self.points[index] for index in sorted(self.refused)]
        for point in points:
            self.cuts.add((point.table, point.address))
            self.cuts.add((point.table, point.end))
        self.refused.clear()
        self._reads = None
        return points


def _read_of(table: Table, members: Sequence[PlannedPoint[P]]) -> Read[P]:
    start = min(p.address for p in members)
    end = max(p.end for p in members)
    return Read(table, start, end - start, tuple(members))
