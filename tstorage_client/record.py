"""Keys and records: the TStorage data model.

A record is a five-part :class:`Key` (cid, mid, moid, cap, acq) bound to a payload value.

Both classes are real frozen, ordered dataclasses (``dataclasses.fields``, ``replace``,
``asdict``, ``astuple``, pattern matching and ``FrozenInstanceError`` all work), but their
storage is a tuple. That lets the protocol core build millions of them per second with C-level
constructors (``tuple.__new__`` through ``map``) instead of running a Python ``__init__`` five
``object.__setattr__`` calls deep for each one. The visible differences from a plain
dataclass are additions: a key unpacks (``cid, mid, moid, cap, acq = key``), has ``len() == 5``
and is an instance of ``tuple``; a record is the flat tuple ``(cid, mid, moid, cap, acq,
value)``. Neither ever compares equal to a plain tuple.
"""

from __future__ import annotations

import dataclasses
import struct
from operator import itemgetter
from typing import Any, ClassVar, Generic, TypeVar

__all__ = [
    "ACQ_MAX",
    "ACQ_MIN",
    "CAP_MAX",
    "CAP_MIN",
    "CID_MAX",
    "CID_MIN",
    "MID_MAX",
    "MID_MIN",
    "MOID_MAX",
    "MOID_MIN",
    "Key",
    "Record",
]

T_co = TypeVar("T_co", covariant=True)

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

CID_MIN, CID_MAX = 0, INT32_MAX
MID_MIN, MID_MAX = INT64_MIN, INT64_MAX
MOID_MIN, MOID_MAX = INT32_MIN, INT32_MAX
CAP_MIN, CAP_MAX = INT64_MIN, INT64_MAX
ACQ_MIN, ACQ_MAX = INT64_MIN, INT64_MAX

_tuple_new = tuple.__new__
_KEY_STRUCT = struct.Struct("<iqiqq")
_KEY_NO_ACQ = struct.Struct("<iqiq")
_KEY_NO_CID = struct.Struct("<qiqq")
_KEY_NO_CID_ACQ = struct.Struct("<qiq")
_KEY_FIELDS = ("cid", "mid", "moid", "cap", "acq")


# Applied through a name so that mypy checks Key as the tuple it is: its dataclass plugin
# would reject order=True on a tuple subclass (tuple already defines the comparisons).
_ordered_frozen_dataclass = dataclasses.dataclass(frozen=True, order=True, init=False)


class _NumpyKeyDtypeList:
    """``Key._numpy_dtype_list``: the key's numpy fields, computed when first read.

    numpy is optional and slow to import, so it is imported only when this is read; without
    numpy the attribute does not exist (AttributeError, as in the reference client).
    """

    def __get__(self, instance: object, owner: type | None = None) -> list[tuple[str, Any]]:
        try:
            import numpy
        except ImportError as error:
            raise AttributeError("Key._numpy_dtype_list needs numpy") from error
        return [
            ("cid", numpy.int32),
            ("mid", numpy.int64),
            ("moid", numpy.int32),
            ("cap", numpy.int64),
            ("acq", numpy.int64),
        ]


@_ordered_frozen_dataclass
class Key(tuple[int, int, int, int, int]):
    """Identifier of a record: client id, meter id, meter object id, capture and acquisition time.

    ``cap`` and ``acq`` are TStorage nanoseconds (since 2001-01-01 UTC). Every component
    defaults to -1 (``Key(1)`` is ``Key(1, -1, -1, -1, -1)``); a key with a negative cid is
    invalid, and ``acq = -1`` means "unset" (the server sets it on ``put``). Keys are ordered
    component by component, as TStorage orders them.
    """

    __slots__ = ()

    cid: int = -1
    mid: int = -1
    moid: int = -1
    cap: int = -1
    acq: int = -1

    __match_args__ = ("cid", "mid", "moid", "cap", "acq")
    _fields: ClassVar[tuple[str, ...]] = _KEY_FIELDS
    _numpy_dtype_list = _NumpyKeyDtypeList()

    def __new__(
        cls, cid: int = -1, mid: int = -1, moid: int = -1, cap: int = -1, acq: int = -1
    ) -> Key:
        return _tuple_new(cls, (cid, mid, moid, cap, acq))

    @classmethod
    def _make(cls, values: tuple[int, int, int, int, int]) -> Key:
        """Build a key from a 5-tuple without argument parsing (used by the protocol core)."""
        return _tuple_new(cls, values)

    @classmethod
    def min(cls) -> Key:
        """The smallest valid key: the lower corner of the whole key space."""
        return _KEY_MIN

    @classmethod
    def max(cls) -> Key:
        """The largest key: the (exclusive) upper corner of the whole key space."""
        return _KEY_MAX

    @classmethod
    def bytes_count(cls) -> int:
        """Size of a whole key on the wire: 32 bytes (``<iqiqq``)."""
        return _KEY_STRUCT.size

    def to_bytes(self, *, with_cid: bool = True, with_acq: bool = True) -> bytes:
        """The key as little-endian ``<iqiqq``, without cid and/or acq when asked.

        Raises ``struct.error`` when a component does not fit its wire type.
        """
        if with_cid:
            return _KEY_STRUCT.pack(*self) if with_acq else _KEY_NO_ACQ.pack(*self[:4])
        return _KEY_NO_CID.pack(*self[1:]) if with_acq else _KEY_NO_CID_ACQ.pack(*self[1:4])

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Key | None:
        """The whole key (``<iqiqq``) at ``offset`` of ``data``; None when too short or cid < 0."""
        if offset < 0 or len(data) - offset < _KEY_STRUCT.size:
            return None
        values = _KEY_STRUCT.unpack_from(data, offset)
        if values[0] < 0:
            return None
        return _tuple_new(cls, values)

    def valid(self) -> bool:
        """True when every component is inside its wire range and cid is not negative."""
        cid, mid, moid, cap, acq = self
        return (
            type(cid) is int
            and CID_MIN <= cid <= CID_MAX
            and INT64_MIN <= mid <= INT64_MAX
            and INT32_MIN <= moid <= INT32_MAX
            and INT64_MIN <= cap <= INT64_MAX
            and INT64_MIN <= acq <= INT64_MAX
        )

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Key):
            return tuple.__eq__(self, other)
        return NotImplemented if not isinstance(other, tuple) else False

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Key):
            return tuple.__ne__(self, other)
        return NotImplemented if not isinstance(other, tuple) else True

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return "Key(cid={!r}, mid={!r}, moid={!r}, cap={!r}, acq={!r})".format(*self)

    def __getnewargs__(self) -> tuple[int, int, int, int, int]:
        return tuple(self)  # type: ignore[return-value]

    def __copy__(self) -> Key:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Key:
        return self


@_ordered_frozen_dataclass
class Record(tuple[Any, ...], Generic[T_co]):
    """A key bound to a payload value (of the channel's payload type ``T``).

    Frozen, ordered (by key, then value) and hashable (when the value is).

    Its storage is one flat 6-tuple ``(cid, mid, moid, cap, acq, value)``: a record costs one
    object instead of a record and a key (88 bytes instead of 136 on 64-bit CPython), which
    is what a ``get()`` of millions of records keeps in memory. ``record.key`` builds the
    :class:`Key` when read (equal, not identical, on each read); ``record.value`` is the
    payload. Ordering the flat tuple is ordering by key, then value.
    """

    __slots__ = ()

    key: Key
    value: T_co

    __match_args__ = ("key", "value")

    def __new__(cls, key: Key, value: T_co) -> Record[T_co]:
        try:
            cid, mid, moid, cap, acq = key
        except (TypeError, ValueError):
            raise TypeError(f"a Record's key must be a Key, got {key!r}") from None
        return _tuple_new(cls, (cid, mid, moid, cap, acq, value))

    @classmethod
    def _make(cls, pair: tuple[Key, T_co]) -> Record[T_co]:
        """Build a record from a (key, value) pair without argument parsing."""
        key, value = pair
        return _tuple_new(cls, (*key, value))

    @classmethod
    def _flat(cls, fields: tuple[int, int, int, int, int, T_co]) -> Record[T_co]:
        """Build a record from its flat fields ``(cid, mid, moid, cap, acq, value)``."""
        return _tuple_new(cls, fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Record):
            return tuple.__eq__(self, other)
        return NotImplemented if not isinstance(other, tuple) else False

    def __ne__(self, other: object) -> bool:
        if isinstance(other, Record):
            return tuple.__ne__(self, other)
        return NotImplemented if not isinstance(other, tuple) else True

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"Record(key={self.key!r}, value={self[5]!r})"

    def __getnewargs__(self) -> tuple[Key, T_co]:
        return (self.key, self[5])

    def __copy__(self) -> Record[T_co]:
        return self


# The dataclass decorator saw only annotations; the values live in the tuple slots.
for _i, _name in enumerate(_KEY_FIELDS):
    setattr(Key, _name, property(itemgetter(_i), doc=f"The key's {_name}."))
Record.key = property(  # type: ignore[assignment]
    lambda record: _tuple_new(Key, record[:5]), doc="The record's key (built when read)."
)
Record.value = property(itemgetter(5), doc="The record's payload value.")  # type: ignore[misc]
del _i, _name


def _record_order(compare: Any, name: str) -> Any:
    """A Record comparison as the dataclass defines it (records of the same class only),
    done on the flat tuple: the same order as comparing (key, value), without building keys."""

    def method(self: Record[Any], other: object) -> Any:
        if other.__class__ is self.__class__:
            return compare(self, other)
        return NotImplemented

    method.__name__ = method.__qualname__ = name
    return method


for _name in ("__lt__", "__le__", "__gt__", "__ge__"):
    setattr(Record, _name, _record_order(getattr(tuple, _name), _name))
del _name

_KEY_MIN = Key(CID_MIN, MID_MIN, MOID_MIN, CAP_MIN, ACQ_MIN)
_KEY_MAX = Key(CID_MAX, MID_MAX, MOID_MAX, CAP_MAX, ACQ_MAX)
