"""The records codec of ``NumpyPayloadType``: wire bytes <-> numpy structured arrays.

Both directions run at numpy speed. A put is assembled in one array of the payload type's
serializer dtype (the wire layout of a PUT/PUTA record) and cut into per-cid batches; a GET
run is checked in place and kept as raw bytes, and a batch is one ``memcpy`` of its pieces
viewed as ``parsing_dtype`` (the wire layout of a GET record).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import pairwise, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from tstorage_client.numpy_payload import NumpyPayloadType
from tstorage_client.protocol import wire
from tstorage_client.protocol._codec import (
    PUT_CHUNK_RECORDS,
    ReadBuffer,
    RecordCodec,
    UnparseableRecord,
    split_by_count,
)
from tstorage_client.record import INT32_MAX, INT32_MIN, INT64_MAX, Record

__all__ = ["NumpyCodec"]

_KEY_NAMES = ["cid", "mid", "moid", "cap", "acq"]
_tuple_new = tuple.__new__

# Rows per put step: bounds the extra memory of a put of a huge array.
_PUT_STEP_ROWS = 16 * PUT_CHUNK_RECORDS

# Batches smaller than this are copied into one joined piece; larger ones are sent as views.
_JOIN_BELOW = 64 << 10


class NumpyCodec:
    """Wire bytes <-> structured arrays; iterables of Record fall back to RecordCodec."""

    def __init__(self, payload_type: NumpyPayloadType) -> None:
        self.payload_type = payload_type
        self._records = RecordCodec(payload_type)
        self._n = wire.KEY_SIZE + payload_type.dtype.itemsize
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
    ) -> Iterator[bytes | memoryview]:
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
            parts, complete = self._encode_step(step, with_acq, max_batch_size, skip_invalid)
            yield from parts
            if not complete:
                return

    def _columns(self, records: Any, with_acq: bool) -> dict[str, npt.NDArray[Any]]:
        """The key and payload columns of the input, checked for presence and length."""
        available = records.dtype.names or () if isinstance(records, np.ndarray) else records
        names = _KEY_NAMES if with_acq else _KEY_NAMES[:4]
        wanted = [*names, *self.payload_type.payload_fields]
        missing = [name for name in wanted if name not in available]
        if missing:
            raise ValueError(f"put input lacks the field(s) {missing}")
        columns = {name: np.asarray(records[name]).reshape(-1) for name in wanted}
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
    ) -> tuple[list[bytes | memoryview], bool]:
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
            return [], complete
        if len(cids) > 1 and not bool(np.all(cids[1:] >= cids[:-1])):
            order = np.argsort(cids, kind="stable")  # stable: last write wins within a cid
            columns = {name: column[order] for name, column in columns.items()}
            cids = columns["cid"]
        payload_type = self.payload_type
        dtype = (
            payload_type.serializer_dtype_with_acq
            if with_acq
            else payload_type.serializer_dtype_no_acq
        )
        packed = np.empty(len(cids), dtype)
        packed["_size"] = dtype.itemsize - 4
        for name in dtype.names[1:]:  # type: ignore[index]
            packed[name] = columns[name]
        return self._batches(packed, cids, max_batch_size), complete

    @staticmethod
    def _batches(
        packed: npt.NDArray[Any], cids: npt.NDArray[Any], max_batch_size: int
    ) -> list[bytes | memoryview]:
        """The per-cid batches: headers and views of ``packed`` (no copy of the rows).

        Views are byte-shaped (format 'B'): asyncio's ``transport.write`` slices what it
        could not send at once by items, so a view of structured items would be cut wrong.
        Small pieces are joined so a put of many small batches is not many tiny writes.
        """
        record_size = packed.dtype.itemsize
        raw = packed.view(np.uint8).data.cast("B")
        bounds = [0, *(np.flatnonzero(cids[1:] != cids[:-1]) + 1).tolist(), len(cids)]
        out: list[bytes | memoryview] = []
        small: list[bytes | memoryview] = []
        pack_header = wire.BATCH_HEADER.pack
        for a, b in pairwise(bounds):
            for cid, start, stop, nbytes in split_by_count(
                int(cids[a]), a, b, record_size, max_batch_size
            ):
                small.append(pack_header(cid, nbytes))
                rows = raw[start * record_size : stop * record_size]
                if nbytes < _JOIN_BELOW:
                    small.append(rows)
                    continue
                out.append(b"".join(small))
                small = []
                out.append(rows)
        if small:
            out.append(b"".join(small))
        return out

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
        """One structured array of ``parsing_dtype`` over one copy of the pieces (writable)."""
        # Rows keep their wire layout, so joining is one memcpy per piece.
        return np.frombuffer(bytearray().join(pieces), self.payload_type.parsing_dtype)

    def get_data(self, batches: list[Any]) -> list[Any]:
        """``ResponseGet.data``: the batches as they are (a list of arrays, never empty)."""
        return batches or [np.empty(0, self.payload_type.parsing_dtype)]

    def iter_records(self, batch: Any) -> Iterable[Record[Any]]:
        """Record objects with Python values (as ``from_bytes`` gives them) from an array."""
        keys = [batch[name].tolist() for name in _KEY_NAMES]
        fields = self.payload_type.payload_fields
        values: Iterable[Any]
        if len(fields) == 1:
            values = batch[fields[0]].tolist()
        elif fields:  # column by column and zipped: faster than a structured tolist()
            values = zip(*(batch[name].tolist() for name in fields), strict=True)
        else:
            values = repeat((), len(batch))
        # A record is the flat tuple (cid, mid, moid, cap, acq, value).
        return map(_tuple_new, repeat(Record), zip(*keys, values, strict=True))


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
