"""Compile a source's mapping config once into the function that maps each record.

A compiled mapping is specialised for its config: the code generator writes a small Python
function with the constants, field names and units of this config inlined (the way
``dataclasses`` and ``namedtuple`` generate their methods), so the common record costs a
few dict lookups and conversions and no interpretation of the config. The generated code is
a *fast path*: when it meets anything it does not expect (a missing field, text that is not
a plain integer, a value out of range) it hands the record to the *exact path*, which is
plain Python written per part and raises :class:`MappingError` naming the field and why.
Both paths give the same record whenever the fast path succeeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from tstorage_client.record import Key, Record
from tstorage_client.timestamp import OFFSET_NS
from tstoraged.mapping.codecs import CodecType, PayloadEncoder, compile_payload_encoder
from tstoraged.mapping.codegen import build_functions, indent
from tstoraged.mapping.errors import ConfigLoc, MappingConfigError, MappingError, missing_field
from tstoraged.mapping.keyparts import MISSING, CompiledKeyPart, compile_key_part
from tstoraged.mapping.model import CapMapping, KeyMapping, PayloadMapping
from tstoraged.mapping.timeparse import CAP_HIGHEST, CAP_LOWEST, UNIT_NS, cap_converter

__all__ = [
    "CompiledMapping",
    "MapMany",
    "MapOne",
    "MappingConfig",
    "MappingConfigError",
    "MappingError",
    "compile_mapping",
]

MapOne = Callable[..., Record[bytes]]
"""``map_one(fields, received_ns=None) -> Record[bytes]``."""
MapMany = Callable[..., tuple[list[Record[bytes]], list[tuple[int, str]]]]
"""``map_many(rows, received_ns=None) -> (records, [(row index, reason), ...])``."""

_KEY_PARTS = ("cid", "mid", "moid")


class MappingConfig(Protocol):
    """What :func:`compile_mapping` reads from a source config (``tstoraged.SourceConfig``)."""

    @property
    def key(self) -> KeyMapping: ...
    @property
    def cap(self) -> CapMapping: ...
    @property
    def payload(self) -> PayloadMapping: ...
    @property
    def lookups(self) -> Mapping[str, Mapping[str, int]]: ...


def compile_mapping(
    config: MappingConfig,
    codecs: Mapping[str, CodecType[Any]],
    clock: Callable[[], int] = time.time_ns,
) -> CompiledMapping:
    """Compile ``config``'s key, cap and payload tables into a :class:`CompiledMapping`.

    ``codecs`` are the installed payload codecs by name; ``clock`` gives Unix nanoseconds
    for records whose capture time is their receive time. Every problem of the config is
    collected into one :class:`MappingConfigError` (``.problems``, each with a ``loc``).
    """
    problems: list[tuple[ConfigLoc, str]] = []
    parts: list[CompiledKeyPart] = []
    for name in _KEY_PARTS:
        try:
            parts.append(compile_key_part(name, getattr(config.key, name), config.lookups))
        except MappingConfigError as exc:
            problems += exc.problems
    encoder: PayloadEncoder | None = None
    try:
        encoder = compile_payload_encoder(config.payload, codecs)
    except MappingConfigError as exc:
        problems += exc.problems
    if problems:
        raise MappingConfigError(problems)
    assert encoder is not None
    return CompiledMapping(parts, config.cap, encoder, config.payload.codec, clock)


class CompiledMapping:
    """Maps named fields to ``Record(Key(cid, mid, moid, cap, acq=-1), payload bytes)``.

    Call it for one record, or use :attr:`map_many` for a batch of rows (failures come back
    as a list instead of as exceptions, which cost microseconds each). In a hot loop bind
    :attr:`map_one` once; it is the generated function itself, without the method call of
    ``__call__``.
    """

    __slots__ = ("_fallback", "codec", "exact", "map_many", "map_one", "source")

    map_one: MapOne
    """``map_one(fields, received_ns=None)``: the record, or :class:`MappingError`."""
    map_many: MapMany
    """``map_many(rows, received_ns=None)``: ``(records, failures)``; a failure is
    ``(index of the row in rows, reason)``. Rows without a ``received_ns`` read the clock
    each, so rows mapped together do not share a capture time."""
    exact: MapOne
    """The exact path alone, as ``map_one`` but slower (for tests and diagnosis)."""
    codec: str
    """Name of the payload codec."""
    source: str
    """The generated Python source (for debugging and for the curious)."""

    def __init__(
        self,
        parts: list[CompiledKeyPart],
        cap: CapMapping,
        encoder: PayloadEncoder,
        codec: str,
        clock: Callable[[], int],
    ) -> None:
        # One converter for both paths, so that they share what it remembers.
        convert_cap = cap_converter(cap.unit, cap.epoch, cap.field) if cap.field else None
        self.exact = _exact_mapper(parts, cap.field, convert_cap, encoder, codec, clock)
        self._fallback = _CountingFallback(self.exact)
        generator = _Generator(parts, cap, convert_cap)
        self.source = generator.source()
        namespace = {
            **generator.namespace,
            "_tn": tuple.__new__,
            "_Key": Key,
            "_Record": Record,
            "_MappingError": MappingError,
            "_MISSING": MISSING,
            "_encode": encoder,
            "_exact": self._fallback,
            "_clock": clock,
        }
        self.map_one, self.map_many = build_functions(self.source, "mapping", namespace)
        self.codec = codec

    def __call__(self, fields: Mapping[str, Any], received_ns: int | None = None) -> Record[bytes]:
        """The record for ``fields``; ``received_ns`` (Unix ns) is used when cap has no field.

        Raises :class:`MappingError` naming the field and the reason.
        """
        return self.map_one(fields, received_ns)

    @property
    def fallbacks(self) -> int:
        """Records the fast path handed to the exact path so far (failed records included).

        Close to the number of failures when the input suits the config; when it is much
        higher, the input has a shape the fast path does not cover (say decimal timestamps).
        """
        return self._fallback.records

    def __repr__(self) -> str:
        return f"<CompiledMapping codec={self.codec!r}>"


class _CountingFallback:
    """The exact path as the fast path calls it: counted, to tell how often that happens."""

    __slots__ = ("exact", "records")

    def __init__(self, exact: MapOne) -> None:
        self.exact = exact
        self.records = 0

    def __call__(self, fields: Mapping[str, Any], received_ns: int | None = None) -> Record[bytes]:
        self.records += 1
        return self.exact(fields, received_ns)


def _exact_mapper(
    parts: list[CompiledKeyPart],
    cap_field: str | None,
    convert_cap: Callable[[Any], int] | None,
    encoder: PayloadEncoder,
    codec: str,
    clock: Callable[[], int],
) -> MapOne:
    """The exact path: every step in plain Python, with the precise error of the first failure."""
    cid_part, mid_part, moid_part = parts

    def exact(fields: Mapping[str, Any], received_ns: int | None = None) -> Record[bytes]:
        cid = cid_part.read(fields)
        mid = mid_part.read(fields)
        moid = moid_part.read(fields)
        if convert_cap is not None and cap_field is not None:
            value = fields.get(cap_field, MISSING)
            if value is MISSING:
                raise missing_field(cap_field)
            cap_ns = convert_cap(value)
        else:
            cap_ns = _receive_time(clock() if received_ns is None else received_ns)
        try:
            payload = encoder(fields)
        except MappingError:
            raise
        except Exception as exc:  # a codec plugin's bug must not stop the source
            raise MappingError(
                f"payload codec {codec!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return Record._flat((cid, mid, moid, cap_ns, -1, payload))

    return exact


def _receive_time(unix_ns: object) -> int:
    if type(unix_ns) is not int:
        raise TypeError(f"receive time must be integer Unix nanoseconds, got {unix_ns!r}")
    cap = unix_ns - OFFSET_NS
    if not CAP_LOWEST <= cap <= CAP_HIGHEST:
        raise MappingError(f"receive time {unix_ns} is out of the range of TStorage times")
    return cap


class _Generator:
    """Writes the fast path of one mapping as Python source; see the module docstring."""

    def __init__(
        self,
        parts: list[CompiledKeyPart],
        cap: CapMapping,
        convert_cap: Callable[[Any], int] | None,
    ) -> None:
        self.parts = parts
        self.cap = cap
        self.convert_cap = convert_cap
        self.namespace: dict[str, Any] = {}

    def source(self) -> str:
        arguments = ", ".join(
            ["_tn", "_Key", "_Record", "_MappingError", "_MISSING", "_encode", "_exact", "_clock"]
        )
        body = self._body()
        lines = [
            f"def _build({arguments}, {', '.join(self.namespace)}):",
            "    def map_one(fields, received_ns=None):",
            "        try:",
            *indent(body(success=["return {record}"]), 3),
            "        except _MappingError:",
            "            raise",
            "        except Exception:",
            "            pass",
            "        return _exact(fields, received_ns)",
            "",
            "    def map_many(rows, received_ns=None):",
            "        records = []",
            "        failures = []",
            "        append = records.append",
            "        for index, fields in enumerate(rows):",
            "            try:",
            *indent(body(success=["append({record})", "continue"]), 4),
            "            except _MappingError as exc:",
            "                failures.append((index, str(exc)))",
            "                continue",
            "            except Exception:",
            "                pass",
            "            try:",
            "                append(_exact(fields, received_ns))",
            "            except _MappingError as exc:",
            "                failures.append((index, str(exc)))",
            "        return records, failures",
            "",
            "    return map_one, map_many",
        ]
        return "\n".join(lines) + "\n"

    def _body(self) -> Callable[..., list[str]]:
        lines: list[str] = []
        values = [self._key_part(part, lines) for part in self.parts]
        cap_check = self._cap(lines)
        # A record is the flat tuple (cid, mid, moid, cap, acq, payload).
        record = f"_tn(_Record, ({', '.join(values)}, cap, -1, _encode(fields)))"

        def body(success: list[str]) -> list[str]:
            return [
                *lines,
                f"if {cap_check}:",
                *indent([line.format(record=record) for line in success], 1),
            ]

        return body

    def _key_part(self, part: CompiledKeyPart, lines: list[str]) -> str:
        """Emit the lines computing ``part``; return the expression of its value."""
        if part.constant is not None:
            return repr(part.constant)
        name = part.name
        convert = self._bind(f"_convert_{name}", part.convert)
        read = (
            f"fields.get({part.field!r}, _MISSING)" if part.optional else f"fields[{part.field!r}]"
        )
        lines.append(f"v = {read}")
        if part.table is not None:
            table = self._bind(f"_table_{name}", part.table)
            lines += [
                f"{name} = {table}.get(v)",
                f"if {name} is None:",
                f"    {name} = {convert}(v)",
            ]
            return name
        memo = self._bind(f"_memo_{name}", part.memo)
        lines += [
            f"if type(v) is int and {part.lowest} <= v <= {part.highest}:",
            f"    {name} = v",
            "else:",
            f"    {name} = {memo}.get(v)",
            f"    if {name} is None:",
            f"        {name} = {convert}(v)",
        ]
        return name

    def _cap(self, lines: list[str]) -> str:
        """Emit the lines computing ``cap``; return the condition that accepts it."""
        cap = self.cap
        in_range = f"{CAP_LOWEST} <= cap <= {CAP_HIGHEST}"
        if cap.field is None:
            lines.append(f"cap = (_clock() if received_ns is None else received_ns) - {OFFSET_NS}")
            return f"type(cap) is int and {in_range}"
        convert = self._bind("_convert_cap", self.convert_cap)
        if cap.unit == "iso8601":
            lines.append(f"cap = {convert}(fields[{cap.field!r}])")
            return in_range
        scaled = _scale("{}", UNIT_NS[cap.unit], OFFSET_NS if cap.epoch == "unix" else 0)
        lines += [
            f"v = fields[{cap.field!r}]",
            "if type(v) is int:",
            f"    cap = {scaled.format('v')}",
            "elif type(v) is str and v.isdigit():",  # plain digits; signs, decimals: exact path
            f"    cap = {scaled.format('int(v)')}",
            "else:",
            f"    cap = {convert}(v)",
        ]
        return in_range

    def _bind(self, name: str, value: object) -> str:
        self.namespace[name] = value
        return name


def _scale(template: str, factor: int, offset: int) -> str:
    expression = template if factor == 1 else f"{template} * {factor}"
    return f"{expression} - {offset}" if offset else expression
