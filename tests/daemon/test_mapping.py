"""The compiled mapping: key parts, lookups, capture times, receive time and errors."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tstoraged_codecs import tstoraged_payload_codecs

from tstorage_client.record import CID_MAX, MID_MAX, MOID_MAX, Key, Record
from tstorage_client.timestamp import OFFSET_NS
from tstoraged.mapping import (
    CodecType,
    CompiledMapping,
    MappingConfigError,
    MappingError,
    compile_mapping,
)
from tstoraged.mapping.timeparse import iso8601_parser, iso8601_to_unix_ns
from tstoraged.source import SourceConfig

CODECS: dict[str, CodecType[Any]] = {codec.name: codec for codec in tstoraged_payload_codecs()}
UNIX_2023 = 1_700_000_000  # 2023-11-14T22:13:20Z
PAYLOAD = {"codec": "raw", "field": "data"}


def source(**table: Any) -> SourceConfig:
    """A validated source config with the given mapping tables."""
    table.setdefault("key", {"cid": 7, "mid": "{meter}", "moid": "{channel}"})
    table.setdefault("payload", PAYLOAD)
    return SourceConfig.model_validate({"type": "test", "name": "src", **table})


def compiled(clock: Any = None, **table: Any) -> CompiledMapping:
    if clock is None:
        return compile_mapping(source(**table), CODECS)
    return compile_mapping(source(**table), CODECS, clock=clock)


def row(**fields: Any) -> dict[str, Any]:
    return {"meter": 12, "channel": 3, "ts": UNIX_2023 * 1000, "data": b"x", **fields}


def key_of(mapping: CompiledMapping, **fields: Any) -> Key:
    return mapping(row(**fields)).key


def failure(mapping: CompiledMapping, **fields: Any) -> str:
    """The error message of mapping the row, checked to be the same on every path."""
    with pytest.raises(MappingError) as caught:
        mapping(row(**fields))
    with pytest.raises(MappingError) as exact:
        mapping.exact(row(**fields))
    records, failures = mapping.map_many([row(**fields)])
    assert records == []
    assert failures == [(0, str(caught.value))]
    assert str(exact.value) == str(caught.value)
    return str(caught.value)


# --- key parts -----------------------------------------------------------------------------


def test_record_has_key_parts_cap_and_unset_acq() -> None:
    record = compiled(cap={"field": "ts", "unit": "ms"})(row())
    assert isinstance(record, Record)
    assert type(record.key) is Key
    assert record == Record(Key(7, 12, 3, UNIX_2023 * 10**9 - OFFSET_NS, -1), b"x")


def test_constant_key_parts() -> None:
    mapping = compiled(key={"cid": 1, "mid": -5, "moid": 0})
    assert key_of(mapping, meter="ignored")[:3] == (1, -5, 0)


def test_constant_given_as_text_is_a_constant() -> None:
    mapping = compiled(key={"cid": "7", "mid": " -8 ", "moid": "{channel}"})
    assert key_of(mapping)[:3] == (7, -8, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12, 12), ("12", 12), (" 12 ", 12), ("+12", 12), ("-4", -4), (12.0, 12), ("12.0", 12)],
)
def test_field_template_takes_integer_values_and_integer_text(value: Any, expected: int) -> None:
    assert key_of(compiled(), meter=value).mid == expected


def test_field_template_text_is_remembered_without_changing_results() -> None:
    mapping = compiled()
    meters = [str(n) for n in range(5000)]  # more than the memo holds
    for _ in range(2):
        records = [mapping(row(meter=meter)) for meter in meters]
        assert [record.key.mid for record in records] == list(range(5000))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "field 'meter': 'abc' is not an integer"),
        ("12.5", "field 'meter': '12.5' is not an integer"),
        (12.5, "field 'meter': 12.5 is not an integer"),
        (True, "field 'meter': True is a boolean, not an integer"),
        ([1], "field 'meter': [1] is not an integer"),
        ("", "field 'meter' is empty"),
        ("1e999999", "field 'meter': '1e999999' is too large"),
        (
            "1e40",
            "field 'meter': '1e40' is out of range: "
            "mid must be -9223372036854775808..9223372036854775806 "
            "(TStorage drops keys at the maximum)",
        ),
        (None, "field 'meter' is empty"),
    ],
)
def test_field_template_refuses_non_integers_naming_the_field(value: Any, reason: str) -> None:
    assert failure(compiled(), meter=value) == reason


def test_missing_key_field_is_an_error_naming_it() -> None:
    fields = row()
    del fields["channel"]
    with pytest.raises(MappingError, match=r"^field 'channel' is missing$"):
        compiled()(fields)


def test_field_reference_default_covers_missing_and_empty_fields() -> None:
    mapping = compiled(key={"cid": 1, "mid": {"field": "meter", "default": 99}, "moid": 0})
    fields = row()
    del fields["meter"]
    assert mapping(fields).key.mid == 99
    assert key_of(mapping, meter="").mid == 99
    assert key_of(mapping, meter=None).mid == 99
    assert key_of(mapping, meter="5").mid == 5


@pytest.mark.parametrize(
    ("part", "highest"), [("cid", CID_MAX - 1), ("mid", MID_MAX - 1), ("moid", MOID_MAX - 1)]
)
def test_key_part_at_its_maximum_is_refused_one_below_is_stored(part: str, highest: int) -> None:
    key = {"cid": 1, "mid": 2, "moid": 3, part: "{value}"}
    mapping = compiled(key=key)
    assert getattr(key_of(mapping, value=highest), part) == highest
    assert getattr(key_of(mapping, value=str(highest)), part) == highest
    for at_max in (highest + 1, str(highest + 1)):
        assert "is out of range" in failure(mapping, value=at_max)
        assert f"{part} must be" in failure(mapping, value=at_max)


@pytest.mark.parametrize(("part", "lowest"), [("cid", 0), ("mid", -(2**63)), ("moid", -(2**31))])
def test_key_part_below_its_minimum_is_refused(part: str, lowest: int) -> None:
    mapping = compiled(key={"cid": 1, "mid": 2, "moid": 3, part: "{value}"})
    assert getattr(key_of(mapping, value=lowest), part) == lowest
    assert "is out of range" in failure(mapping, value=lowest - 1)


@pytest.mark.parametrize(
    ("key", "loc"),
    [
        ({"cid": -1, "mid": 0, "moid": 0}, ("key", "cid")),
        ({"cid": CID_MAX, "mid": 0, "moid": 0}, ("key", "cid")),
        ({"cid": 0, "mid": MID_MAX, "moid": 0}, ("key", "mid")),
        ({"cid": 0, "mid": 0, "moid": MOID_MAX}, ("key", "moid")),
        (
            {"cid": 0, "mid": 0, "moid": {"field": "m", "default": MOID_MAX}},
            ("key", "moid", "default"),
        ),
    ],
)
def test_constant_out_of_range_is_a_config_error_with_its_loc(
    key: dict[str, Any], loc: tuple[str, ...]
) -> None:
    with pytest.raises(MappingConfigError) as caught:
        compiled(key=key)
    assert caught.value.loc == loc
    assert "TStorage drops keys at the maximum" in caught.value.reason


@pytest.mark.parametrize("template", ["meter-{id}", "{a}{b}", "{}", "{ }", "meter", "{{x}}"])
def test_bad_template_is_refused_by_the_config_model_at_its_key(template: str) -> None:
    with pytest.raises(ValidationError) as caught:
        source(key={"cid": 1, "mid": template, "moid": 0})
    (error,) = caught.value.errors()
    assert error["loc"] == ("key", "mid")
    assert "expected an integer, a field reference '{field}'" in error["msg"]
    assert repr(template) in error["msg"]


def test_blanks_around_a_template_field_name_are_formatting() -> None:
    mapping = compiled(key={"cid": 1, "mid": "{ meter }", "moid": "{Meter ID}"})
    assert mapping(row(**{"Meter ID": 4})).key[:3] == (1, 12, 4)


def test_numpy_style_integers_are_accepted_for_key_parts_and_caps() -> None:
    class Int64:
        """An exact integer type that is not int (as numpy.int64 is)."""

        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    mapping = compiled(cap={"field": "ts", "unit": "s"})
    key = mapping(row(meter=Int64(5), ts=Int64(UNIX_2023))).key
    assert (key.mid, key.cap) == (5, UNIX_2023 * SECOND_NS - OFFSET_NS)


def test_boolean_key_part_is_refused_by_the_config_model() -> None:
    with pytest.raises(ValidationError, match="got a boolean"):
        source(key={"cid": True, "mid": 1, "moid": 0})


def test_field_names_are_data_never_code() -> None:
    name = "a'b\"c\n]; import os #"
    mapping = compiled(key={"cid": 1, "mid": "{" + name + "}", "moid": 0})
    assert mapping({name: 42, "ts": 0, "data": b""}).key.mid == 42


# --- lookups -------------------------------------------------------------------------------

LOOKUPS = {"lines": {"line-a": 3, "line-b": 4, "7": 70}}


def test_named_lookup_table_maps_text_to_integers() -> None:
    key = {"cid": 1, "mid": {"field": "line", "lookup": "lines"}, "moid": 0}
    mapping = compiled(key=key, lookups=LOOKUPS)
    assert key_of(mapping, line="line-a").mid == 3
    assert key_of(mapping, line="line-b").mid == 4
    assert key_of(mapping, line=7).mid == 70  # a JSON number finds the entry "7"


def test_inline_lookup_table() -> None:
    key = {"cid": 1, "mid": 2, "moid": {"field": "dir", "lookup": {"in": 1, "out": 2}}}
    mapping = compiled(key=key)
    assert key_of(mapping, dir="out").moid == 2


def test_lookup_default_covers_unknown_and_missing_values() -> None:
    key = {"cid": 1, "mid": {"field": "line", "lookup": "lines", "default": 0}, "moid": 0}
    mapping = compiled(key=key, lookups=LOOKUPS)
    assert key_of(mapping, line="line-z").mid == 0
    assert mapping({"ts": 0, "data": b""}).key.mid == 0


def test_value_missing_from_lookup_without_default_is_an_error_naming_table() -> None:
    key = {"cid": 1, "mid": {"field": "line", "lookup": "lines"}, "moid": 0}
    mapping = compiled(key=key, lookups=LOOKUPS)
    assert failure(mapping, line="line-z") == "field 'line': 'line-z' is not in lookup 'lines'"
    assert failure(mapping, line=[1]) == "field 'line': [1] is not in lookup 'lines'"
    with pytest.raises(MappingError, match=r"^field 'line' is missing$"):
        mapping({"ts": 0, "data": b""})


def test_value_missing_from_inline_lookup_says_inline() -> None:
    key = {"cid": 1, "mid": 2, "moid": {"field": "dir", "lookup": {"in": 1}}}
    assert failure(compiled(key=key), dir="up") == (
        "field 'dir': 'up' is not in the inline lookup table"
    )


def test_unknown_lookup_table_is_a_config_error() -> None:
    key = {"cid": 1, "mid": {"field": "line", "lookup": "linez"}, "moid": 0}
    with pytest.raises(MappingConfigError) as caught:
        compiled(key=key, lookups=LOOKUPS)
    assert caught.value.loc == ("key", "mid", "lookup")
    assert caught.value.reason == "unknown lookup table 'linez' (known: lines)"


def test_lookup_value_out_of_range_for_its_part_is_a_config_error_at_the_table() -> None:
    key = {"cid": {"field": "site", "lookup": "sites"}, "mid": 1, "moid": 0}
    with pytest.raises(MappingConfigError) as caught:
        compiled(key=key, lookups={"sites": {"ok": 5, "bad": -3}})
    assert caught.value.loc == ("lookups", "sites", "bad")
    assert caught.value.reason.startswith("-3: cid must be 0..")


def test_every_config_problem_is_reported_at_once() -> None:
    key = {"cid": -1, "mid": {"field": "x", "lookup": "nope"}, "moid": 0}
    with pytest.raises(MappingConfigError) as caught:
        compiled(key=key, payload={"codec": "msgpack"})
    assert [loc for loc, _ in caught.value.problems] == [
        ("key", "cid"),
        ("key", "mid", "lookup"),
        ("payload", "codec"),
    ]
    assert "unknown codec 'msgpack' (known: json, raw, struct)" in str(caught.value)


# --- capture time --------------------------------------------------------------------------

SECOND_NS = 10**9


@pytest.mark.parametrize(
    ("unit", "value"),
    [
        ("s", UNIX_2023),
        ("ms", UNIX_2023 * 10**3),
        ("us", UNIX_2023 * 10**6),
        ("ns", UNIX_2023 * 10**9),
    ],
)
def test_cap_units_from_unix_epoch(unit: str, value: int) -> None:
    mapping = compiled(cap={"field": "ts", "unit": unit})
    expected = UNIX_2023 * SECOND_NS - OFFSET_NS
    assert key_of(mapping, ts=value).cap == expected
    assert key_of(mapping, ts=str(value)).cap == expected
    assert key_of(mapping, ts=float(value)).cap == expected


def test_cap_from_tstorage_epoch_is_not_shifted() -> None:
    mapping = compiled(cap={"field": "ts", "unit": "s", "epoch": "tstorage"})
    assert key_of(mapping, ts=5).cap == 5 * SECOND_NS


@pytest.mark.parametrize(
    ("value", "unix_ns"),
    [
        (1700000000.123, 1700000000_123000000),  # the decimal the float prints as, exactly
        ("1700000000.123456789", 1700000000_123456789),
        (" 1700000000.5 ", 1700000000_500000000),
        ("1.7e9", 1700000000_000000000),
        (Decimal("1700000000.000000001"), 1700000000_000000001),
        (-1.5, -1_500000000),
        ("-2", -2_000000000),
    ],
)
def test_cap_fractional_seconds_are_exact(value: Any, unix_ns: int) -> None:
    mapping = compiled(cap={"field": "ts", "unit": "s"})
    assert key_of(mapping, ts=value).cap == unix_ns - OFFSET_NS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "field 'ts': 'abc' is not a number"),
        ("", "field 'ts': '' is not a number"),
        (float("nan"), "field 'ts': nan is not a finite number"),
        ("inf", "field 'ts': 'inf' is not a finite number"),
        (True, "field 'ts': True is a boolean, not a time"),
        (None, "field 'ts': None is not a number (NoneType)"),
        (2**62, "field 'ts': 4611686018427387904 is out of the range of TStorage times"),
        pytest.param(
            10**5000,
            "field 'ts': <16610-bit integer> is out of the range of TStorage times",
            id="huge-int",
        ),
        ("1e999999", "field 'ts': '1e999999' is out of the range of TStorage times"),
        ("1e99999999999", "field 'ts': '1e99999999999' is out of the range of TStorage times"),
    ],
)
def test_bad_cap_values_are_errors_naming_the_field(value: Any, reason: str) -> None:
    assert failure(compiled(cap={"field": "ts", "unit": "ms"}), ts=value) == reason


def test_cap_at_the_maximum_is_refused() -> None:
    mapping = compiled(cap={"field": "ts", "unit": "ns", "epoch": "tstorage"})
    assert key_of(mapping, ts=2**63 - 2).cap == 2**63 - 2
    assert "out of the range" in failure(mapping, ts=2**63 - 1)


def test_missing_cap_field_is_an_error() -> None:
    fields = row()
    del fields["ts"]
    with pytest.raises(MappingError, match=r"^field 'ts' is missing$"):
        compiled(cap={"field": "ts"})(fields)


ISO_BASE = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
ISO_BASE_NS = int(ISO_BASE.timestamp()) * SECOND_NS - OFFSET_NS


@pytest.mark.parametrize(
    ("text", "offset_ns"),
    [
        ("2024-01-02T03:04:05Z", 0),
        ("2024-01-02T03:04:05+00:00", 0),
        ("2024-01-02T05:04:05+02:00", 0),
        ("2024-01-01T22:04:05-05:00", 0),
        ("2024-01-02T03:04:05", 0),  # naive: UTC
        ("2024-01-02 03:04:05", 0),
        ("20240102T030405Z", 0),
        ("2024-01-02T03:04:05.5Z", 500_000_000),
        ("2024-01-02T03:04:05,25Z", 250_000_000),
        ("2024-01-02T03:04:05.123456789Z", 123_456_789),
        ("2024-01-02T05:04:05.000000001+02:00", 1),
        ("2024-01-02T03:04:05.1234567891234", 123_456_789),  # beyond ns: dropped
        ("20240102T030405.75", 750_000_000),
        ("2024-01-02", -(3 * 3600 + 4 * 60 + 5) * SECOND_NS),
    ],
)
def test_cap_from_iso8601_text(text: str, offset_ns: int) -> None:
    mapping = compiled(cap={"field": "ts", "unit": "iso8601"})
    assert key_of(mapping, ts=text).cap == ISO_BASE_NS + offset_ns


def test_cap_from_datetime_objects_in_iso8601_mode() -> None:
    mapping = compiled(cap={"field": "ts", "unit": "iso8601"})
    assert key_of(mapping, ts=ISO_BASE).cap == ISO_BASE_NS
    assert key_of(mapping, ts=ISO_BASE.replace(tzinfo=None)).cap == ISO_BASE_NS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2024-13-01T00:00:00Z", "field 'ts': '2024-13-01T00:00:00Z' is not an ISO 8601 time"),
        ("yesterday", "field 'ts': 'yesterday' is not an ISO 8601 time"),
        (1700000000, "field 'ts': 1700000000 is not ISO 8601 text (int)"),
    ],
)
def test_bad_iso8601_values_are_errors_naming_the_field(value: Any, reason: str) -> None:
    assert failure(compiled(cap={"field": "ts", "unit": "iso8601"}), ts=value) == reason


def test_receive_time_argument_is_the_cap_without_a_cap_field() -> None:
    mapping = compiled()
    received = UNIX_2023 * SECOND_NS + 42
    assert mapping(row(), received).key.cap == received - OFFSET_NS
    records, _ = mapping.map_many([row(), row()], received_ns=received)
    assert [record.key.cap for record in records] == [received - OFFSET_NS] * 2


def test_clock_gives_the_receive_time_when_none_is_passed() -> None:
    ticks = itertools.count(UNIX_2023 * SECOND_NS)
    mapping = compiled(clock=lambda: next(ticks))
    assert mapping(row()).key.cap == UNIX_2023 * SECOND_NS - OFFSET_NS
    records, _ = mapping.map_many([row(), row(), row()])
    # Each row reads the clock, so rows of one meter mapped together keep distinct keys.
    first = UNIX_2023 * SECOND_NS + 1 - OFFSET_NS
    assert [record.key.cap for record in records] == [first, first + 1, first + 2]


def test_receive_time_must_be_integer_nanoseconds() -> None:
    with pytest.raises(TypeError, match="integer Unix nanoseconds"):
        compiled()(row(), 1.5)  # type: ignore[arg-type]


def test_default_clock_is_the_current_time() -> None:
    before = dt.datetime.now(dt.UTC).timestamp()
    cap = compiled()(row()).key.cap
    assert abs((cap + OFFSET_NS) / SECOND_NS - before) < 60  # the same minute, not an epoch off


# --- batches and the exact path ------------------------------------------------------------


def test_map_many_returns_records_and_failures_by_row_index() -> None:
    mapping = compiled(cap={"field": "ts", "unit": "ms"})
    rows = [row(meter=1), row(meter="x"), row(meter="3"), row(ts="soon"), row(meter=5.0)]
    records, failures = mapping.map_many(rows)
    assert [record.key.mid for record in records] == [1, 3, 5]
    assert failures == [
        (1, "field 'meter': 'x' is not an integer"),
        (3, "field 'ts': 'soon' is not a number"),
    ]
    assert records == [mapping(rows[i]) for i in (0, 2, 4)]


def test_map_many_accepts_any_iterable() -> None:
    records, failures = compiled().map_many(row(meter=n) for n in range(3))
    assert [record.key.mid for record in records] == [0, 1, 2]
    assert failures == []


def test_payload_errors_name_the_field() -> None:
    mapping = compiled(payload={"codec": "raw", "field": "data"})
    assert failure(mapping, data=12) == "field 'data': 12 is not text or bytes (int)"


values = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(min_value=-5, max_value=5).map(str),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["", " 7 ", "1e3", "0x10", "1_000", "١٢", "²", "-0", "+3", "12.0"]),
    st.binary(max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(meter=values, channel=values, ts=values, data=values)
def test_fast_path_and_exact_path_agree(meter: Any, channel: Any, ts: Any, data: Any) -> None:
    mapping = FAST_EXACT
    fields = {"meter": meter, "channel": channel, "ts": ts, "data": data}
    try:
        expected: Any = mapping.exact(fields)
    except MappingError as exc:
        expected = str(exc)
    try:
        got: Any = mapping(fields)
    except MappingError as exc:
        got = str(exc)
    assert got == expected
    records, failures = mapping.map_many([fields])
    assert (records[0] if records else failures[0][1]) == expected


FAST_EXACT = compiled(
    key={"cid": "{meter}", "mid": {"field": "channel", "default": 1}, "moid": 5},
    cap={"field": "ts", "unit": "ms"},
)


@pytest.mark.parametrize(
    "fields",
    [
        {"meter": "12", "channel": "3", "ts": "1700000000123", "data": "x"},
        {"meter": 12, "channel": 3, "ts": 1700000000123, "data": b"x"},
    ],
)
def test_text_and_native_rows_take_the_fast_path(fields: dict[str, Any]) -> None:
    mapping = compiled(cap={"field": "ts", "unit": "ms"})
    assert mapping(fields) == mapping.exact(fields)
    records, failures = mapping.map_many([fields] * 3)
    assert len(records) == 3
    assert failures == []
    assert mapping.fallbacks == 0
    with pytest.raises(MappingError):
        mapping({"channel": 3, "ts": 0, "data": b""})  # no meter: the exact path says so
    assert mapping.fallbacks == 1


def test_lookup_and_iso8601_rows_take_the_fast_path() -> None:
    key = {
        "cid": 1,
        "mid": {"field": "line", "lookup": "lines"},
        "moid": {"field": "m", "default": 0},
    }
    mapping = compiled(key=key, lookups=LOOKUPS, cap={"field": "ts", "unit": "iso8601"})
    record = mapping(row(line="line-b", ts="2024-01-02T03:04:05Z"))
    assert record.key[:4] == (1, 4, 0, ISO_BASE_NS)
    assert mapping.fallbacks == 0


@st.composite
def iso8601_texts(draw: st.DrawFn) -> tuple[str, int]:
    """ISO 8601 text in the shapes exports write, and its Unix ns computed independently."""
    moment = draw(
        st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))
    )
    moment = moment.replace(microsecond=0)
    nanos = draw(st.integers(0, 10**9 - 1))
    digits = draw(st.integers(0, 9))
    fraction = f"{nanos:09d}"[:digits]
    minutes = draw(st.integers(-14 * 60, 14 * 60))
    zone = draw(
        st.sampled_from(
            [
                "",
                "Z",
                f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}",
                f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}",
            ]
        )
    )
    separator = draw(st.sampled_from(["T", " "]))
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    text += ("." + fraction if fraction else "") + zone
    offset_minutes = minutes if zone not in ("", "Z") else 0
    utc = moment - dt.timedelta(minutes=offset_minutes)
    unix_ns = (utc - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) * 1000
    return text, unix_ns + int(fraction.ljust(9, "0") or 0)


@settings(max_examples=300, deadline=None)
@given(iso8601_texts())
def test_iso8601_parser_agrees_with_the_general_parser(case: tuple[str, int]) -> None:
    text, unix_ns = case
    parse = iso8601_parser("ts")
    assert iso8601_to_unix_ns(text, "ts") == unix_ns
    assert parse(text) == unix_ns
    assert parse(text) == unix_ns  # again, from the remembered minute and offset


@pytest.mark.parametrize(
    "text", ["2023-02-30T10:00:00Z", "2023-11-14T22:13:61Z", "2023-11-14T22:13:20+25:00"]
)
def test_iso8601_parser_refuses_impossible_times_like_the_general_parser(text: str) -> None:
    parse = iso8601_parser("ts")
    with pytest.raises(MappingError, match="is not an ISO 8601 time"):
        parse(text)
    with pytest.raises(MappingError, match="is not an ISO 8601 time"):
        iso8601_to_unix_ns(text, "ts")
