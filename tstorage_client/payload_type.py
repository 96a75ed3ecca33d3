"""Payload serializers: how a record's value becomes bytes on the wire and back.

``PayloadType`` is the interface of the reference client. The built-ins also expose a
bulk interface (``to_bytes_many`` / ``from_bytes_many``) and, for fixed-size struct payloads,
their ``struct.Struct`` so the protocol core can pack and unpack whole batches at C speed.
"""

from __future__ import annotations

import importlib.util
import struct
from collections.abc import Iterable
from typing import Any

from tstorage_client._payload_interface import PayloadType, T

__all__ = [
    "BytesPayloadType",
    "PayloadType",
    "StructPayloadType",
    "TuplePayloadType",
    "UnitPayloadType",
]
if importlib.util.find_spec("numpy") is not None:
    __all__ += ["NumpyPayloadType"]  # noqa: F822 (provided by __getattr__ below)


class StructPayloadType(PayloadType[T]):
    """One value packed with a ``struct`` format, e.g. ``StructPayloadType[float]("<d")``.

    ``from_bytes`` answers None when the payload does not unpack (wrong length included).
    """

    def __init__(self, format: str) -> None:  # 'format': the reference client's name
        self.struct = struct.Struct(format)
        self.format = format
        self.fixed_size = self.struct.size

    def to_bytes(self, value: T) -> bytes:
        return self.struct.pack(value)

    def from_bytes(self, buffer: bytes) -> T | None:
        try:
            value: T = self.struct.unpack(buffer)[0]
        except (struct.error, IndexError):
            return None
        return value

    def _inline_struct(self) -> tuple[struct.Struct, bool] | None:
        cls = type(self)
        if cls.to_bytes is not StructPayloadType.to_bytes:
            return None
        if cls.from_bytes is not StructPayloadType.from_bytes:
            return None
        if len(self.struct.unpack(bytes(self.struct.size))) != 1:
            return None  # several values: to_bytes fails, from_bytes keeps the first
        return self.struct, False

    def __repr__(self) -> str:
        return f"StructPayloadType({self.format!r})"


class TuplePayloadType(PayloadType[T]):
    """A tuple of values packed with a ``struct`` format, e.g. ``TuplePayloadType("<if?")``.

    ``to_bytes(value)`` is ``pack(*value)``; ``from_bytes`` answers the unpacked tuple, or
    None when the payload does not unpack.
    """

    def __init__(self, format: str) -> None:  # 'format': the reference client's name
        self.struct = struct.Struct(format)
        self.format = format
        self.fixed_size = self.struct.size

    def to_bytes(self, value: T) -> bytes:
        return self.struct.pack(*value)  # type: ignore[misc]

    def from_bytes(self, buffer: bytes) -> T | None:
        try:
            value: T = self.struct.unpack(buffer)  # type: ignore[assignment]
        except struct.error:
            return None
        return value

    def _inline_struct(self) -> tuple[struct.Struct, bool] | None:
        cls = type(self)
        if cls.to_bytes is not TuplePayloadType.to_bytes:
            return None
        if cls.from_bytes is not TuplePayloadType.from_bytes:
            return None
        return self.struct, True

    def __repr__(self) -> str:
        return f"TuplePayloadType({self.format!r})"


class UnitPayloadType(PayloadType[tuple[()]]):
    """No payload: writes empty payloads; on read ignores the payload (keys-only scans)."""

    def to_bytes(self, value: object) -> bytes:
        return b""

    def from_bytes(self, buffer: bytes) -> tuple[()]:
        return ()

    def __repr__(self) -> str:
        return "UnitPayloadType()"


class BytesPayloadType(PayloadType[bytes]):
    """The payload as raw bytes, unchanged."""

    def to_bytes(self, value: bytes | bytearray | memoryview) -> bytes:
        return bytes(value)

    def from_bytes(self, buffer: bytes) -> bytes:
        return bytes(buffer)

    def to_bytes_many(self, values: Iterable[bytes]) -> list[bytes]:
        listed = list(values)
        if set(map(type, listed)) == {bytes}:  # the usual case, checked at C speed
            return listed
        return [v if type(v) is bytes else bytes(v) for v in listed]

    def from_bytes_many(self, buffers: Iterable[bytes]) -> list[bytes | None]:
        return list(buffers)

    def __repr__(self) -> str:
        return "BytesPayloadType()"


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
