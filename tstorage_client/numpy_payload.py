"""NumPy bulk path: ``NumpyPayloadType`` puts and gets whole structured arrays.

Needs numpy (``pip install 'tstoraged[numpy]'``). The payload of every record is one value
of a fixed numpy dtype: a scalar dtype (``NumpyPayloadType("<f8")``) or a structured one
(``NumpyPayloadType([("x", "<i4"), ("y", "<f4")])``). The dtype's bytes are the payload bytes.

With a channel built on it::

    channel = Channel(host, port, NumpyPayloadType("<f8"))

- ``put``/``puta`` accept a numpy structured array, or a dict of equal-length arrays, with
  the fields ``cid, mid, moid, cap`` (``acq`` too for ``puta``) plus the payload: the field
  ``value`` for a scalar payload dtype, or the payload dtype's own fields (or a ``value``
  field of the payload dtype). Integer key columns of any integer dtype are accepted; rows
  whose key is out of range follow the usual invalid-key rule (end the stream there, or are
  skipped with ``skip_invalid=True``). An iterable of ``Record`` objects still works.
- ``get`` returns ``data`` as a structured array of ``record_dtype``: ``cid, mid, moid, cap,
  acq`` followed by the payload field(s); ``get_stream`` hands the callback such arrays.
  Rows keep their wire layout (a 4-byte gap before ``cid``), so a read is joined with one
  ``memcpy``; ``numpy.lib.recfunctions.repack_fields`` makes a packed copy when needed.
- ``get_iter`` yields ``Record`` objects whose values are Python scalars (or tuples for a
  structured payload), as ``from_bytes`` returns them.

Both directions run at numpy speed: records of one size are viewed in place with
``np.frombuffer`` and copied column by column; a put is assembled in one packed array.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import pairwise, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from tstorage_client.payload_type import PayloadType
from tstorage_client.protocol import wire
from tstorage_client.protocol._codec import (
    PUT_CHUNK_RECORDS,
    ReadBuffer,
    RecordCodec,
    UnparseableRecord,
    split_by_count,
)
from tstorage_client.record import INT32_MAX, INT32_MIN, INT64_MAX, Key, Record

__all__ = ["NumpyPayloadType"]

_KEY_DTYPES = [("cid", "<i4"), ("mid", "<i8"), ("moid", "<i4"), ("cap", "<i8"), ("acq", "<i8")]
_KEY_NAMES = [name for name, _ in _KEY_DTYPES]
_KEY_FORMATS = [fmt for _, fmt in _KEY_DTYPES]
_KEY_OFFSETS = [4, 8, 16, 20, 28]  # after the int32 n of a GET record
_tuple_new = tuple.__new__

# Rows per put step: bounds the extra memory of a put of a huge array.
_PUT_STEP_ROWS = 16 * PUT_CHUNK_RECORDS


class NumpyPayloadType(PayloadType[Any]):
    """A fixed-size numpy payload; enables the structured-array bulk path of the channels."""

    def __init__(self, dtype: npt.DTypeLike) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject or self.dtype.itemsize == 0:
            raise ValueError(f"a payload dtype needs a fixed size without objects: {self.dtype}")
        self.fixed_size = self.dtype.itemsize
        names = self.dtype.names
        self.payload_fields: tuple[str, ...] = ("value",) if names is None else tuple(names)
        clash = set(self.payload_fields) & set(_KEY_NAMES)
        if clash:
            raise ValueError(f"payload fields clash with key fields: {sorted(clash)}")
        # get() hands out the received records in place: each row keeps its wire layout
        # (int32 n, key, payload), with n hidden as a 4-byte gap before cid.
        payload_offsets = (
            [0] if names is None else [self.dtype.fields[name][1] for name in names]  # type: ignore[index]
        )
        payload_formats = (
            [self.dtype] if names is None else [self.dtype.fields[name][0] for name in names]  # type: ignore[index]
        )
        self.record_dtype = np.dtype(
            {
                "names": [*_KEY_NAMES, *self.payload_fields],
                "formats": [*_KEY_FORMATS, *payload_formats],
                "offsets": [*_KEY_OFFSETS, *(wire.KEY_SIZE + 4 + o for o in payload_offsets)],
                "itemsize": 4 + wire.KEY_SIZE + self.dtype.itemsize,
            }
        )
        """The dtype of the arrays ``get`` returns: the key fields, then the payload fields.

        Rows keep their wire layout, so there is a 4-byte gap before ``cid``;
        ``numpy.lib.recfunctions.repack_fields`` makes a packed copy if one is needed.
        """

    def to_bytes(self, value: Any) -> bytes:
        return np.asarray(value, dtype=self.dtype).tobytes()

    def from_bytes(self, buffer: bytes) -> Any | None:
        if len(buffer) != self.dtype.itemsize:
            return None
        return np.frombuffer(buffer, self.dtype)[0].tolist()

    def make_codec(self) -> NumpyCodec:
        """The protocol core's codec for this payload type (structured arrays)."""
        return NumpyCodec(self)

    def __repr__(self) -> str:
        return f"NumpyPayloadType({self.dtype!r})"


class NumpyCodec:
    """Wire bytes <-> structured arrays; iterables of Record fall back to RecordCodec."""

    def __init__(self, payload_type: NumpyPayloadType) -> None:
        self.payload_type = payload_type
        self._records = RecordCodec(payload_type)
        self._n = wire.KEY_SIZE + payload_type.fixed_size  # type: ignore[operator]
        # The int32 n of each record, strided over the records.
        self._lengths = np.dtype({"names": ["n"], "formats": ["<i4"], "itemsize": self._n + 4})

    # ---------------------------------------------------------------- PUT / PUTA

    def encode_put_body(
        self,
        records: Any,
        *,
        with_acq: bool,
        max_batch_size: int,
        skip_invalid: bool,
    ) -> Iterator[bytes]:
        """Per-cid batches from a structured array / dict of arrays (or Record objects)."""
        if not isinstance(records, np.ndarray | Mapping):
            yield from self._records.encode_put_body(
                records, with_acq=with_acq, max_batch_size=max_batch_size, skip_invalid=skip_invalid
            )
            return
        columns = self._columns(records, with_acq)
        total = len(columns["cid"])
        for start in range(0, total, _PUT_STEP_ROWS):
            step = {
                name: column[start : start + _PUT_STEP_ROWS] for name, column in columns.items()
            }
            body, complete = self._encode_step(step, with_acq, max_batch_size, skip_invalid)
            if body:
                yield body
            if not complete:
                return

    def _columns(self, records: Any, with_acq: bool) -> dict[str, npt.NDArray[Any]]:
        """The key and payload columns of the input, checked for presence and length."""
        available = records.dtype.names or () if isinstance(records, np.ndarray) else records
        names = _KEY_NAMES if with_acq else _KEY_NAMES[:4]
        if "value" in available:
            payload_names = ["value"]
        else:
            payload_names = list(self.payload_type.payload_fields)
        missing = [name for name in [*names, *payload_names] if name not in available]
        if missing:
            raise ValueError(f"put input lacks the field(s) {missing}")
        columns = {name: np.asarray(records[name]) for name in [*names, *payload_names]}
        lengths = {len(column) for column in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"put input columns differ in length: {sorted(lengths)}")
        for name in names:
            if columns[name].dtype.kind not in "iu":
                raise TypeError(f"key field {name!r} must be integers, not {columns[name].dtype}")
        return columns

    def _encode_step(
        self,
        columns: dict[str, npt.NDArray[Any]],
        with_acq: bool,
        max_batch_size: int,
        skip_invalid: bool,
    ) -> tuple[bytes, bool]:
        valid = _valid_keys(columns)
        complete = True
        if valid is not None:
            if skip_invalid:
                keep: Any = np.flatnonzero(valid)
            else:
                keep = slice(0, int(valid.argmin()))
                complete = False
            columns = {name: column[keep] for name, column in columns.items()}
        cids = columns["cid"]
        if len(cids) == 0:
            return b"", complete
        if len(cids) > 1 and not bool(np.all(cids[1:] >= cids[:-1])):
            order = np.argsort(cids, kind="stable")  # stable: last write wins within a cid
            columns = {name: column[order] for name, column in columns.items()}
            cids = columns["cid"]
        key_fields = _KEY_DTYPES[1:] if with_acq else _KEY_DTYPES[1:4]
        packed = np.empty(
            len(cids), np.dtype([("n", "<i4"), *key_fields, ("p", self.payload_type.dtype)])
        )
        packed["n"] = packed.dtype.itemsize - 4
        for name, _ in key_fields:
            packed[name] = columns[name]
        if "value" in columns:
            packed["p"] = columns["value"]
        else:
            for name in self.payload_type.payload_fields:
                packed["p"][name] = columns[name]
        return self._batches(packed, cids, max_batch_size), complete

    @staticmethod
    def _batches(packed: npt.NDArray[Any], cids: npt.NDArray[Any], max_batch_size: int) -> bytes:
        record_size = packed.dtype.itemsize
        raw = packed.view(np.uint8).data
        bounds = [0, *(np.flatnonzero(cids[1:] != cids[:-1]) + 1).tolist(), len(cids)]
        parts: list[Any] = []
        pack_header = wire.BATCH_HEADER.pack
        for a, b in pairwise(bounds):
            for cid, start, stop, nbytes in split_by_count(
                int(cids[a]), a, b, record_size, max_batch_size
            ):
                parts.append(pack_header(cid, nbytes))
                parts.append(raw[start * record_size : stop * record_size])
        return b"".join(parts)

    # ---------------------------------------------------------------- GET

    def decode_run(self, buf: ReadBuffer, pos: int, n: int, count: int) -> tuple[memoryview, int]:
        """Up to ``count`` records of size 4 + n at ``pos``: checked, kept as raw bytes."""
        if n != self._n:
            size = n - wire.KEY_SIZE
            raise UnparseableRecord(
                f"a {size}-byte payload for a {self._n - wire.KEY_SIZE}-byte dtype"
            )
        decoded = count
        if count > 1:
            same = np.frombuffer(buf, self._lengths, count, pos)["n"] == n
            if not same.all():
                decoded = int(same.argmin())
        return memoryview(buf)[pos : pos + decoded * (n + 4)], decoded

    def join(self, pieces: list[Any]) -> npt.NDArray[Any]:
        """One structured array over a single copy of the pieces' bytes (writable)."""
        # Rows keep their wire layout, so joining is one memcpy per piece; building arrays
        # field by field (or np.concatenate, which repacks) is several times slower.
        return np.frombuffer(bytearray().join(pieces), self.payload_type.record_dtype)

    def iter_records(self, batch: Any) -> Iterable[Record[Any]]:
        """Record objects (Python values) from a structured array."""
        keys = map(
            _tuple_new,
            repeat(Key),
            zip(*(batch[name].tolist() for name in _KEY_NAMES), strict=True),
        )
        fields = self.payload_type.payload_fields
        values = batch[fields[0]].tolist() if fields == ("value",) else batch[list(fields)].tolist()
        return map(_tuple_new, repeat(Record), zip(keys, values, strict=True))


def _valid_keys(columns: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.bool_] | None:
    """Row validity of the key columns, or None when every row is valid (the common case)."""
    valid: npt.NDArray[np.bool_] | None = None

    def require(ok: npt.NDArray[np.bool_]) -> None:
        nonlocal valid
        if not ok.all():
            valid = ok if valid is None else valid & ok

    cid = columns["cid"]
    require((cid >= 0) & (cid <= INT32_MAX))
    moid = columns["moid"]
    if moid.dtype.itemsize > 4 or moid.dtype.kind == "u":
        require((moid >= INT32_MIN) & (moid <= INT32_MAX))
    for name in ("mid", "cap", "acq"):
        column = columns.get(name)
        if column is not None and column.dtype.kind == "u" and column.dtype.itemsize == 8:
            require(column <= INT64_MAX)
    return valid
