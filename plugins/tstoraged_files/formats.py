"""Line formats: complete lines of one file in, records out; bad lines are rejected.

A parser is made per file (it keeps that file's CSV header) and is handed whole blocks of
lines, so the per-line work is a tight loop: ``csv.reader`` over the block, one dict per row,
one ``context.map`` call. Every reject carries the origin ``"<path>:<line>"``.
"""

from __future__ import annotations

import csv
import json
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from tstorage_client.record import Key, Record
from tstoraged_files.lines import PREFIX_BYTES, LineBlock

if TYPE_CHECKING:
    import _csv

    from tstoraged.source import SourceContext
    from tstoraged_files.config import CsvOptions, FilesConfig
    from tstoraged_files.lineclock import LineClock

__all__ = ["CsvParser", "JsonLinesParser", "LineParser", "RecordsParser", "make_parser"]

_JSON = json.JSONDecoder()

BOM = "\ufeff"
"""A byte-order mark at the start of a file is not part of its first line."""


class LineParser(ABC):
    """Turns the lines of one file into records."""

    def __init__(self, context: SourceContext, path: str, config: FilesConfig) -> None:
        self.context = context
        self.path = path
        self.encoding = config.encoding
        self.max_line_bytes = config.max_line_bytes
        self.stamp_lines = config.cap.field is None
        self._last_stamp = 0
        self.line_clock: LineClock | None = None
        """Numbers lines (acq, read-time stamp) when set by the reader."""
        self.record_lines: list[int] = []
        """Line number of each record of the last :meth:`parse_block`."""
        self.rejected = 0
        """Lines of this file rejected so far (by this parser or by the mapping)."""

    def parse_block(self, block: LineBlock) -> list[Record[bytes]]:
        """Records from a block; oversized, undecodable and unparsable lines are rejected."""
        for line, prefix in block.oversized:
            self.reject(prefix, f"line longer than max_line_bytes={self.max_line_bytes}", line)
        self.record_lines = []
        if not block.count:
            return []
        return self.parse(self.decode(block), block.first_line)

    @abstractmethod
    def parse(self, lines: list[str], first_line: int) -> list[Record[bytes]]:
        """Records from decoded lines; ``lines[0]`` is line number ``first_line``.

        Appends each record's line number to :attr:`record_lines`.
        """

    def reject(self, raw: object, reason: str, line: int) -> None:
        """Dead-letter one line of this file."""
        self.rejected += 1
        self.context.reject(raw, reason, origin=f"{self.path}:{line}")

    def map_fields(self, fields: dict[str, Any], line: int, raw: str) -> Record[bytes] | None:
        """Map fields through the source's mapping; a refused row counts as rejected."""
        received_ns = None
        if self.stamp_lines:
            # Without a capture-time field each line is stamped when read, one ns apart, so
            # rows of one meter read together still get distinct keys; numbered by the line
            # clock, a line read again gets the same stamp (and so the same key).
            if self.line_clock:
                received_ns = self.line_clock.stamp_ns(line)
            else:
                self._last_stamp = received_ns = max(time.time_ns(), self._last_stamp + 1)
        record = self.context.map(
            fields, origin=f"{self.path}:{line}", raw=raw, received_ns=received_ns
        )
        if record is None:
            self.rejected += 1
        return record

    def decode(self, block: LineBlock) -> list[str]:
        """The block's lines as text; a line that cannot be decoded or is too long becomes ""."""
        try:
            lines = block.data.decode(self.encoding).split("\n")
        except UnicodeDecodeError:
            lines = self._decode_each(block)
        if block.first_line == 1 and lines[0].startswith(BOM):
            lines[0] = lines[0][1:]  # exports from Windows tools often start with a BOM
        # One decoded character is at least one byte: only lines longer than a quarter of the
        # bound can exceed it, and only those are measured exactly.
        limit = self.max_line_bytes
        quarter = limit // 4
        if len(block.data) > limit and max(map(len, lines)) > quarter:
            for i, text in enumerate(lines):
                if len(text) > quarter and len(text.encode(self.encoding)) > limit:
                    raw = text.encode(self.encoding)[:PREFIX_BYTES]
                    self.reject(
                        raw, f"line longer than max_line_bytes={limit}", block.first_line + i
                    )
                    lines[i] = ""
        return lines

    def _decode_each(self, block: LineBlock) -> list[str]:
        lines = []
        for i, raw in enumerate(block.data.split(b"\n")):
            try:
                lines.append(raw.decode(self.encoding))
            except UnicodeDecodeError as exc:
                reason = f"undecodable bytes ({self.encoding}) at column {exc.start + 1}"
                self.reject(raw[:PREFIX_BYTES], reason, block.first_line + i)
                lines.append("")
        return lines


class CsvParser(LineParser):
    """Delimited text; columns from the file's first line or from the config.

    With ``header = true``, line 1 of the file is the header, and any later line equal to it is
    skipped too: after ``copytruncate`` a writer starts the file over with its header.
    """

    def __init__(
        self,
        context: SourceContext,
        path: str,
        config: FilesConfig,
        header_line: str | None = None,
    ) -> None:
        super().__init__(context, path, config)
        self.options: CsvOptions = config.csv
        self.header_row: list[str] | None = None
        self.columns: list[str] | None = config.csv.columns
        if header_line is not None and self.options.header:
            self._take_header(next(self._reader([header_line]), []))

    def _reader(self, lines: list[str]) -> _csv.Reader:
        return csv.reader(lines, delimiter=self.options.delimiter, quotechar=self.options.quotechar)

    def _take_header(self, row: list[str]) -> None:
        self.header_row = row
        if self.options.columns is None:
            self.columns = row

    def parse(self, lines: list[str], first_line: int) -> list[Record[bytes]]:
        records: list[Record[bytes]] = []
        reader = self._reader(lines)
        base = first_line - 1  # line number = base + reader.line_num
        while True:  # a csv.Error ends the row loop; the reader goes on with the next line
            try:
                if base == 0 and self.options.header and reader.line_num == 0:
                    self._take_header(next(reader, []))
                self._parse_rows(reader, lines, base, records)
                return records
            except csv.Error as exc:
                number = reader.line_num
                self.reject(lines[number - 1], f"CSV: {exc}", base + number)

    def _parse_rows(
        self, reader: _csv.Reader, lines: list[str], base: int, records: list[Record[bytes]]
    ) -> None:
        columns = self.columns
        if columns is None:
            for row in reader:
                if row:
                    number = reader.line_num
                    self.reject(lines[number - 1], "no header line seen yet", base + number)
            return
        # The hot loop: everything it touches is a local.
        width = len(columns)
        header = self.header_row
        path = self.path
        map_record = self.context.map
        map_stamped = self.map_fields if self.stamp_lines else None
        append = records.append
        append_line = self.record_lines.append
        for row in reader:
            if len(row) != width or row == header:
                if row and row != header:
                    number = reader.line_num
                    reason = f"expected {width} fields, got {len(row)}"
                    self.reject(lines[number - 1], reason, base + number)
                continue
            number = reader.line_num
            # Lengths are equal (checked above); zip's strict= keyword alone costs ~40 % here.
            fields = dict(zip(columns, row))  # noqa: B905
            if map_stamped is None:
                record = map_record(fields, origin=f"{path}:{base + number}", raw=lines[number - 1])
                if record is None:
                    self.rejected += 1
                    continue
            else:
                record = map_stamped(fields, base + number, lines[number - 1])
                if record is None:
                    continue
            append(record)
            append_line(base + number)


class JsonLinesParser(LineParser):
    """One JSON object per line; its top-level keys are the fields."""

    def parse(self, lines: list[str], first_line: int) -> list[Record[bytes]]:
        records: list[Record[bytes]] = []
        append = records.append
        decode = _JSON.decode
        path = self.path
        map_record = self.context.map
        map_stamped = self.map_fields if self.stamp_lines else None
        append_line = self.record_lines.append
        for i, text in enumerate(lines):
            try:
                obj = decode(text)
            except ValueError as exc:
                if text.strip():
                    self.reject(text, f"JSON: {exc}", first_line + i)
                continue
            if type(obj) is not dict:
                self.reject(text, f"not a JSON object but {type(obj).__name__}", first_line + i)
                continue
            if map_stamped is None:
                record = map_record(obj, origin=f"{path}:{first_line + i}", raw=text)
                if record is None:
                    self.rejected += 1
                    continue
            else:
                record = map_stamped(obj, first_line + i, text)
                if record is None:
                    continue
            append(record)
            append_line(first_line + i)
        return records


class RecordsParser(LineParser):
    """The client's record CSV: ``cid,mid,moid,cap[,acq],hexpayload`` (times in TStorage ns).

    The rows ``python -m tstorage_client get --csv`` writes carry the acq (kept with
    ``tstorage.write_mode = "puta"``); rows without it leave the acq to TStorage. Blank
    lines, ``#`` comments and a header line starting with ``cid`` are skipped.
    """

    def parse(self, lines: list[str], first_line: int) -> list[Record[bytes]]:
        records: list[Record[bytes]] = []
        make_key = Key._make
        make_record = Record._flat
        fromhex = bytes.fromhex
        for i, text in enumerate(lines):
            parts = text.split(",")
            if len(parts) not in (5, 6):
                stripped = text.strip()
                if stripped and not stripped.startswith("#"):
                    self.reject(text, f"expected 5 or 6 fields, got {len(parts)}", first_line + i)
                continue
            try:
                acq = int(parts[4]) if len(parts) == 6 else -1
                key = make_key((int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), acq))
                payload = fromhex(parts[-1])
            except ValueError as exc:
                if parts[0].strip() != "cid":  # the header line
                    self.reject(text, str(exc), first_line + i)
                continue
            if not key.valid():
                self.reject(text, "key component out of range", first_line + i)
                continue
            records.append(make_record((*key, payload)))
            self.record_lines.append(first_line + i)
        return records


def make_parser(
    context: SourceContext, path: str, config: FilesConfig, header_line: str | None
) -> LineParser:
    """The parser for ``config.format``; ``header_line`` is line 1 when resuming mid-file."""
    if config.format == "csv":
        return CsvParser(context, path, config, header_line)
    if config.format == "jsonl":
        return JsonLinesParser(context, path, config)
    return RecordsParser(context, path, config)
