"""Payload serializers: how a record's value becomes bytes on the wire and back.

``PayloadType`` is the interface of the reference client. The built-ins also expose a
bulk interface (``to_bytes_many`` / ``from_bytes_many``) and, for fixed-size struct payloads,
their ``struct.Struct`` so the protocol core can pack and unpack whole batches at C speed.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

__all__ = [
    "BytesPayloadType",
    "PayloadType",
    "StructPayloadType",
    "TuplePayloadType",
    "UnitPayloadType",
]

T = TypeVar("T")


class PayloadType(ABC, Generic[T]):
    """Interface for payload serializers."""

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


class StructPayloadType(PayloadType[Any]):
    """One value packed with a ``struct`` format, e.g. ``StructPayloadType("<d")`` for a float."""

    def __init__(self, format: str) -> None:  # 'format': the reference client's name
        self.struct = struct.Struct(format)
        if len(self.struct.unpack(bytes(self.struct.size))) != 1:
            raise ValueError(f"StructPayloadType needs a format with one value, got {format!r}")
        self.format = format
        self.fixed_size = self.struct.size

    def to_bytes(self, value: Any) -> bytes:
        return self.struct.pack(value)

    def from_bytes(self, buffer: bytes) -> Any | None:
        if len(buffer) != self.struct.size:
            return None
        return self.struct.unpack(buffer)[0]

    def __repr__(self) -> str:
        return f"StructPayloadType({self.format!r})"


class TuplePayloadType(PayloadType[tuple[Any, ...]]):
    """A tuple of values packed with a ``struct`` format, e.g. ``TuplePayloadType("<if?")``."""

    def __init__(self, format: str) -> None:  # 'format': the reference client's name
        self.struct = struct.Struct(format)
        self.format = format
        self.fixed_size = self.struct.size

    def to_bytes(self, value: Sequence[Any]) -> bytes:
        return self.struct.pack(*value)

    def from_bytes(self, buffer: bytes) -> tuple[Any, ...] | None:
        if len(buffer) != self.struct.size:
            return None
        return self.struct.unpack(buffer)

    def __repr__(self) -> str:
        return f"TuplePayloadType({self.format!r})"


class UnitPayloadType(PayloadType[tuple[()]]):
    """No payload: writes empty payloads; on read ignores the payload (keys-only scans)."""

    fixed_size = None

    def to_bytes(self, value: object) -> bytes:
        return b""

    def from_bytes(self, buffer: bytes) -> tuple[()]:
        return ()


class BytesPayloadType(PayloadType[bytes]):
    """The payload as raw bytes, unchanged."""

    def to_bytes(self, value: bytes | bytearray | memoryview) -> bytes:
        return bytes(value)

    def from_bytes(self, buffer: bytes) -> bytes:
        return bytes(buffer)

    def to_bytes_many(self, values: Iterable[bytes]) -> list[bytes]:
        return [v if type(v) is bytes else bytes(v) for v in values]

    def from_bytes_many(self, buffers: Iterable[bytes]) -> list[bytes | None]:
        return list(buffers)


def __getattr__(name: str) -> Any:
    # NumpyPayloadType lives in its own module so that numpy is imported only when used.
    if name == "NumpyPayloadType":
        try:
            from tstorage_client.numpy_payload import NumpyPayloadType
        except ImportError as error:  # numpy is an optional dependency
            raise AttributeError(
                "NumpyPayloadType needs numpy: pip install 'tstoraged[numpy]'"
            ) from error
        return NumpyPayloadType
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
