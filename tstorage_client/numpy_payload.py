"""NumPy bulk path: ``NumpyPayloadType`` puts and gets whole structured arrays.

Needs numpy (``pip install 'tstoraged[numpy]'``). Every record's payload is a fixed numpy
layout, given as the reference client takes it: ``NumpyPayloadType(dtype)`` with ``dtype``

- ``None`` or ``[]``: no payload fields (empty payloads);
- a list of ``(name, type)`` pairs, or a structured ``numpy.dtype``: those fields;
- a scalar type or dtype (``numpy.int32``, ``"<f8"``): one field named ``v0``.

With ``K`` the key fields ``cid int32, mid int64, moid int32, cap int64, acq int64`` and
``F`` the payload fields, the type carries four packed dtypes:

- ``parsing_dtype = _size int32 + K + F``: exactly a record of a GET response on the wire;
- ``record_dtype = K + F``;
- ``serializer_dtype_with_acq = _size + K without cid + F``: a PUTA record on the wire;
- ``serializer_dtype_no_acq = _size + K without cid and acq + F``: a PUT record.

A channel built on it (``Channel(host, port, NumpyPayloadType(numpy.float64))``):

- ``put``/``puta`` take a structured array (or recarray), e.g. of ``parsing_dtype`` (its
  ``_size`` may hold anything: it is filled in), or a dict of equal-length arrays, with the
  key fields (``acq`` only for ``puta``) and the payload fields; records are grouped by cid.
  Rows with an invalid key follow the usual rule (end the request there, or are skipped with
  ``skip_invalid=True``). An iterable of ``Record`` objects works too.
- ``get`` answers ``data`` as a list of structured arrays of ``parsing_dtype`` (one or more
  chunks: ``numpy.concatenate(response.data)`` joins them); ``get_stream`` hands the callback
  such arrays.
- ``get_iter`` yields ``Record`` objects with Python values: the value of a single payload
  field, or the tuple of several.

This module is the data model only; the structured-array codec is
``tstorage_client.protocol._numpy_codec``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tstorage_client._payload_interface import PayloadType

__all__ = ["KEY_FIELDS", "NumpyPayloadType"]

KEY_FIELDS: list[tuple[str, str]] = [
    ("cid", "<i4"),
    ("mid", "<i8"),
    ("moid", "<i4"),
    ("cap", "<i8"),
    ("acq", "<i8"),
]
"""The key as numpy fields (little-endian, as on the wire)."""

_SIZE_FIELD = ("_size", "<i4")
_RESERVED = {"_size", *(name for name, _ in KEY_FIELDS)}


def _payload_fields(dtype: Any) -> list[tuple[str, np.dtype[Any]]]:
    """The payload fields of any constructor form of ``NumpyPayloadType``."""
    if dtype is None or (isinstance(dtype, list | tuple) and len(dtype) == 0):
        return []
    structured = np.dtype(dtype)
    if structured.names is None:
        if structured.subdtype is not None or structured.itemsize == 0:
            raise ValueError(f"a payload dtype needs a fixed size: {structured}")
        return [("v0", structured)]
    fields = structured.fields
    assert fields is not None
    return [(name, fields[name][0]) for name in structured.names]


class NumpyPayloadType(PayloadType[Any]):
    """A fixed numpy payload layout; enables the structured-array bulk path of the channels.

    Values are Python values: the one field's value (e.g. a ``float`` for ``numpy.float64``),
    or the tuple of the fields when there are several (``()`` for none). ``to_bytes`` takes
    that (a 1-tuple too); ``from_bytes`` answers it, or None when the size is wrong.
    """

    def __init__(self, dtype: npt.DTypeLike | list[Any] | None = None) -> None:
        fields = _payload_fields(dtype)
        clash = sorted({name for name, _ in fields} & _RESERVED)
        if clash:
            raise ValueError(f"payload fields clash with key fields: {clash}")
        self.dtype: np.dtype[Any] = np.dtype(fields)
        """The payload alone (packed); its itemsize is the payload size."""
        if self.dtype.hasobject:
            raise ValueError(f"a payload dtype cannot hold Python objects: {self.dtype}")
        self.payload_fields: tuple[str, ...] = tuple(name for name, _ in fields)
        self.fixed_size = self.dtype.itemsize
        key = list(KEY_FIELDS)
        self.parsing_dtype: np.dtype[Any] = np.dtype([_SIZE_FIELD, *key, *fields])
        """A GET record as on the wire: ``_size``, the key, the payload fields."""
        self.record_dtype: np.dtype[Any] = np.dtype([*key, *fields])
        """The key and the payload fields."""
        self.serializer_dtype_with_acq: np.dtype[Any] = np.dtype([_SIZE_FIELD, *key[1:], *fields])
        """A PUTA record as on the wire (no cid: it is in the batch header)."""
        self.serializer_dtype_no_acq: np.dtype[Any] = np.dtype([_SIZE_FIELD, *key[1:-1], *fields])
        """A PUT record as on the wire (no cid, no acq)."""

    def to_bytes(self, value: Any) -> bytes:
        if not self.payload_fields:
            return b""
        if not isinstance(value, tuple):
            value = (value,)
        return np.array(value, dtype=self.dtype).tobytes()

    def from_bytes(self, buffer: bytes) -> Any:
        if len(buffer) != self.dtype.itemsize:
            return None
        if not self.payload_fields:
            return ()
        row: tuple[Any, ...] = np.frombuffer(buffer, self.dtype)[0].tolist()
        return row[0] if len(row) == 1 else row

    def __repr__(self) -> str:
        return f"NumpyPayloadType({self.dtype.descr!r})"
