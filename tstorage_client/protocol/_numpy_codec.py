"""The records codec of ``NumpyPayloadType``: wire bytes <-> numpy structured arrays.

Both directions run at numpy speed. A put is assembled per step of rows in the payload
type's serializer dtype (the wire layout of a PUT/PUTA record): one block copy per row, or
one memcpy of the step, when the input array already has the wire layout, else field by
field; per-cid batches are byte views of it. A ``get()`` without a memory limit is received
in place (``protocol.client.GetIntoParser``: ``count_run`` checks the records where they
landed, ``view_records`` makes the one array); otherwise a GET run is checked in place and
kept as raw bytes, and a batch is one ``memcpy`` of its pieces viewed as ``parsing_dtype``
(the wire layout of a GET record).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
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
_CID = np.dtype("<i4")
_tuple_new = tuple.__new__

# Rows per put step (1 MiB of <f8 rows): bounds the extra memory of a put of a huge array,
# and keeps a step in cache from packing to sending; its memory is reused by the next step
# (allocations this small come from the heap, not fresh pages). Measured: 2x this step was
# no faster; 16x was 30 % slower to encode (fresh 8 MiB arrays take a page fault per page).
_PUT_STEP_ROWS = 2 * PUT_CHUNK_RECORDS

# Batches smaller than this are copied into one joined piece; larger ones are sent as views.
_JOIN_BELOW = 64 << 10


class NumpyCodec:
    """Wire bytes <-> structured arrays; iterables of Record fall back to RecordCodec."""

    receives_in_place = True
    """A GET held whole is received into one buffer (``protocol.client.GetIntoParser``)."""

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
    ) -> Iterator[bytes | bytearray | memoryview]:
        """Per-cid batches from a structured array / dict of arrays (or Record objects)."""
        if not isinstance(records, np.ndarray | Mapping):
            yield from self._records.encode_put_body(
                records, with_acq=with_acq, max_batch_size=max_batch_size, skip_invalid=skip_invalid
            )
            return
        columns = self._columns(records, with_acq)
        wire_dtype = (
            self.payload_type.serializer_dtype_with_acq
            if with_acq
            else self.payload_type.serializer_dtype_no_acq
        )
        rows = _row_block(records, wire_dtype)
        # The raw rows carry the cid where the wire record has its size: a step is packed
        # with one copy and its cids are read back from the packed rows, still in cache.
        cid_in_rows = (
            isinstance(records, np.ndarray)
            and rows is not None
            and rows.dtype == np.uint8
            and records.dtype.fields is not None
            and records.dtype.fields["cid"][:2] == (_CID, 0)
        )
        total = len(columns["cid"])
        for start in range(0, total, _PUT_STEP_ROWS):
            step = slice(start, start + _PUT_STEP_ROWS)
            complete = yield from self._encode_step(
                {name: column[step] for name, column in columns.items()},
                None if rows is None else rows[step],
                cid_in_rows,
                wire_dtype,
                max_batch_size,
                skip_invalid,
            )
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
        rows: npt.NDArray[Any] | None,
        cid_in_rows: bool,
        wire_dtype: np.dtype[Any],
        max_batch_size: int,
        skip_invalid: bool,
    ) -> Generator[bytes | bytearray | memoryview, None, bool]:
        """The batches of one step of rows; returns False when an invalid row ended the put."""
        cids = columns["cid"]
        if len(cids) == 0:
            return True
        record_size = wire_dtype.itemsize
        if cid_in_rows:
            assert rows is not None
            packed = np.empty(len(rows), wire_dtype)
            packed.view(np.uint8).reshape(len(rows), record_size)[...] = rows
            sizes = packed["_size"]  # the cids, until the sizes are written
            first = int(sizes[0])
            if first >= 0 and bool(np.all(sizes == first)):  # the other key fields fit
                sizes[...] = record_size - 4
                raw = packed.view(np.uint8).data.cast("B")
                yield from _batches(
                    [(first, 0, len(rows))],
                    record_size,
                    max_batch_size,
                    lambda a, b: raw[a * record_size : b * record_size],
                )
                return True
        low, high = _cid_range(cids)
        valid = _valid_keys(columns, low, high)
        complete = True
        select: Any = None
        if valid is not None:
            if skip_invalid:
                select = np.flatnonzero(valid)
            else:
                select = slice(0, int(valid.argmin()))
                complete = False
            cids = cids[select]
            if len(cids) == 0:
                return complete
            low, high = _cid_range(cids)
        if low != high and not bool(np.all(cids[1:] >= cids[:-1])):
            order = np.argsort(cids, kind="stable")  # stable: last write wins within a cid
            select = order if select is None else np.arange(len(columns["cid"]))[select][order]
            cids = cids[order]
        if select is not None:
            columns = {name: column[select] for name, column in columns.items()}
            rows = None if rows is None else rows[select]
        if low == high:
            bounds = [0, len(cids)]
        else:
            bounds = [0, *(np.flatnonzero(cids[1:] != cids[:-1]) + 1).tolist(), len(cids)]
        runs = [(int(cids[a]), a, b) for a, b in pairwise(bounds)]
        yield from _batches(
            runs,
            record_size,
            max_batch_size,
            lambda a, b: _pack(columns, rows, wire_dtype, a, b),
        )
        return complete

    # ---------------------------------------------------------------- GET

    def decode_run(self, buf: ReadBuffer, pos: int, n: int, count: int) -> tuple[memoryview, int]:
        """Up to ``count`` records of size 4 + n at ``pos``: checked, kept as raw bytes."""
        decoded = self.count_run(buf, pos, n, count)
        return memoryview(buf)[pos : pos + decoded * (n + 4)], decoded

    def count_run(self, buf: ReadBuffer | mmap.mmap, pos: int, n: int, count: int) -> int:
        """How many of the ``count`` records at ``pos`` (the first of size 4 + n) have our size."""
        if n != self._n:
            size = n - wire.KEY_SIZE
            raise UnparseableRecord(
                f"a {size}-byte payload for a {self._n - wire.KEY_SIZE}-byte dtype"
            )
        if count > 1:
            same = np.frombuffer(buf, self._lengths, count, pos)["n"] == n
            if not same.all():
                return int(same.argmin())
        return count

    def view_records(self, buffer: Any, offset: int, count: int) -> npt.NDArray[Any]:
        """``count`` records at ``offset`` of ``buffer`` as an array of ``parsing_dtype``."""
        return np.frombuffer(buffer, self.payload_type.parsing_dtype, count, offset)

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


def _batches(
    runs: Iterable[tuple[int, int, int]],
    record_size: int,
    max_batch_size: int,
    pack: Callable[[int, int], memoryview],
) -> Iterator[bytes | bytearray | memoryview]:
    """The per-cid batches of the runs ``(cid, start, stop)``: headers and packed rows.

    ``pack(start, stop)`` gives the rows as a byte view; each batch is packed when it is
    reached, so it is still in cache when it is sent. Views are byte-shaped (format 'B'):
    asyncio's ``transport.write`` slices what it could not send at once by items, so a view
    of structured items would be cut wrong. Small pieces are joined so a put of many small
    batches is not many tiny writes.
    """
    small: list[bytes | memoryview] = []
    pack_header = wire.BATCH_HEADER.pack
    for run in runs:
        for cid, start, stop, nbytes in split_by_count(*run, record_size, max_batch_size):
            small.append(pack_header(cid, nbytes))
            rows = pack(start, stop)
            if nbytes < _JOIN_BELOW:
                small.append(rows)
                continue
            yield b"".join(small)
            small = []
            yield rows
    if small:
        yield b"".join(small)


def _row_block(records: Any, wire_dtype: np.dtype[Any]) -> npt.NDArray[Any] | None:
    """The input rows viewed so that one field holds the bytes of a wire record after its size.

    That is possible when the input is a structured array whose fields of the wire record
    (all but ``_size``) have the wire types and sit at one common shift from their wire
    offsets: e.g. ``cid, mid, moid, cap, payload`` for a put, or ``parsing_dtype`` for a puta.
    Then packing a row is one copy of a block of bytes. None otherwise.
    """
    if not isinstance(records, np.ndarray) or records.dtype.fields is None:
        return None
    fields = records.dtype.fields
    wire_fields = wire_dtype.fields
    assert wire_fields is not None
    assert wire_dtype.names is not None
    shift: int | None = None
    for name in wire_dtype.names[1:]:
        wire_type, wire_offset = wire_fields[name][:2]
        field = fields.get(name)
        if field is None or field[0] != wire_type:
            return None
        if shift is None:
            shift = field[1] - wire_offset
        elif field[1] - wire_offset != shift:
            return None
    if shift is None:  # no payload and no key beyond cid: nothing to copy
        return None
    flat = records.reshape(-1)
    if shift == 0 and records.dtype.itemsize == wire_dtype.itemsize and flat.flags.c_contiguous:
        # The very layout of the wire but for the first 4 bytes: rows of raw bytes.
        return flat.view(np.uint8).reshape(len(flat), wire_dtype.itemsize)
    return flat.view(_block_dtype(wire_dtype, 4 + shift, records.dtype.itemsize))["block"]


def _block_dtype(wire_dtype: np.dtype[Any], offset: int, itemsize: int) -> np.dtype[Any]:
    """One field: the bytes of a wire record after its size, at ``offset`` of ``itemsize``."""
    return np.dtype(
        {
            "names": ["block"],
            "formats": [f"V{wire_dtype.itemsize - 4}"],
            "offsets": [offset],
            "itemsize": itemsize,
        }
    )


def _pack(
    columns: dict[str, npt.NDArray[Any]],
    rows: npt.NDArray[Any] | None,
    wire_dtype: np.dtype[Any],
    start: int,
    stop: int,
) -> memoryview:
    """Rows ``start:stop`` in the wire layout, as a byte view of a new array."""
    packed = np.empty(stop - start, wire_dtype)
    if rows is None:
        for name in wire_dtype.names[1:]:  # type: ignore[index]
            packed[name] = columns[name][start:stop]
    elif rows.dtype == np.uint8:  # one memcpy; the sizes then go over the first column
        packed.view(np.uint8).reshape(stop - start, wire_dtype.itemsize)[...] = rows[start:stop]
    else:  # one block copy per row
        packed.view(_block_dtype(wire_dtype, 4, wire_dtype.itemsize))["block"] = rows[start:stop]
    packed["_size"] = wire_dtype.itemsize - 4
    return packed.view(np.uint8).data.cast("B")


def _cid_range(cids: npt.NDArray[Any]) -> tuple[int, int]:
    """The smallest and largest cid; one pass when they are all the same (the usual case)."""
    first = int(cids[0])
    if bool(np.all(cids == first)):
        return first, first
    return int(cids.min()), int(cids.max())


def _valid_keys(
    columns: dict[str, npt.NDArray[Any]], cid_min: int, cid_max: int
) -> npt.NDArray[np.bool_] | None:
    """Row validity of the key columns, or None when every row is valid (the common case).

    Bounds are checked with reductions first; a mask is built only for a column that has an
    out-of-range value.
    """
    valid: npt.NDArray[np.bool_] | None = None

    def require(ok: npt.NDArray[np.bool_]) -> None:
        nonlocal valid
        valid = ok if valid is None else valid & ok

    cid = columns["cid"]
    if cid_min < 0 or cid_max > INT32_MAX:
        require((cid >= 0) & (cid <= INT32_MAX))
    moid = columns["moid"]
    if (moid.dtype.itemsize > 4 or moid.dtype.kind == "u") and (
        int(moid.min()) < INT32_MIN or int(moid.max()) > INT32_MAX
    ):
        require((moid >= INT32_MIN) & (moid <= INT32_MAX))
    for name in ("mid", "cap", "acq"):
        column = columns.get(name)
        if (
            column is not None
            and column.dtype.kind == "u"
            and column.dtype.itemsize == 8
            and int(column.max()) > INT64_MAX
        ):
            require(column <= INT64_MAX)
    return valid
