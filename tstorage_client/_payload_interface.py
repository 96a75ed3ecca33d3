"""``PayloadType``, the interface of payload serializers (its own module, imported by
``payload_type`` and ``numpy_payload`` alike, so that neither imports the other at load time).
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    # A default (PEP 696) lets ``StructPayloadType("<i")`` be ``StructPayloadType[Any]``
    # for the type checker, as it is at run time; ``StructPayloadType[int]`` narrows it.
    import typing_extensions

    T = typing_extensions.TypeVar("T", default=Any)
else:
    T = TypeVar("T")

__all__ = ["PayloadType"]


class PayloadType(ABC, Generic[T]):
    """Interface for payload serializers: a value of type ``T`` <-> the payload bytes."""

    #: When every payload of this type has the same size, that size; otherwise None.
    fixed_size: int | None = None

    @abstractmethod
    def to_bytes(self, value: T) -> bytes:
        """Converts provided value to bytes to be sent to TStorage."""

    @abstractmethod
    def from_bytes(self, buffer: bytes) -> T | None:
        """Converts bytes to value or None in case of failure."""

    def to_bytes_many(self, values: Iterable[T]) -> list[bytes]:
        """Serialize many values; override for speed. Default: ``to_bytes`` for each."""
        return list(map(self.to_bytes, values))

    def from_bytes_many(self, buffers: Iterable[bytes]) -> list[T | None]:
        """Deserialize many payloads; override for speed. Default: ``from_bytes`` for each."""
        return list(map(self.from_bytes, buffers))

    def _inline_struct(self) -> tuple[struct.Struct, bool] | None:
        """(struct, values are tuples) when the payload is exactly one ``struct`` packing.

        The protocol core then packs and unpacks whole records with one struct. None (the
        default) means "call to_bytes / from_bytes"; so does any subclass that overrides them.
        """
        return None
