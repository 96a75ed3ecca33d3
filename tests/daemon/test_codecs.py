"""The built-in payload codecs: struct, raw and json."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tstoraged_codecs import JSON_CODEC, RAW_CODEC, STRUCT_CODEC
from tstoraged_codecs.struct_codec import (
    StructCodecConfig,
    _exact_encoder,  # the fallback path, compared with the generated one
    format_slots,
)

from tstorage_client.payload_type import TuplePayloadType
from tstoraged.mapping import CodecType, MappingConfigError, MappingError, PayloadEncoder


def encoder(codec: CodecType[Any], **settings: Any) -> PayloadEncoder:
    return codec.factory(codec.validate(settings))


def struct_encoder(fmt: str, *fields: str) -> PayloadEncoder:
    return encoder(STRUCT_CODEC, format=fmt, fields=list(fields))


def config_error(codec: CodecType[Any], **settings: Any) -> MappingConfigError:
    with pytest.raises(MappingConfigError) as caught:
        codec.validate(settings)
    return caught.value


# --- struct --------------------------------------------------------------------------------

SEED = struct_encoder("<if?", "count", "temp", "ok")


def test_struct_packs_the_seed_payload_from_text_fields() -> None:
    payload = SEED({"count": "10", "temp": "12.5", "ok": "true"})
    assert payload == struct.pack("<if?", 10, 12.5, True)
    assert TuplePayloadType("<if?").from_bytes(payload) == (10, 12.5, True)


def test_struct_packs_native_values() -> None:
    assert SEED({"count": 10, "temp": 12.5, "ok": False}) == struct.pack("<if?", 10, 12.5, False)
    assert SEED({"count": 10, "temp": 3, "ok": 1}) == struct.pack("<if?", 10, 3.0, True)


def test_struct_ignores_fields_it_does_not_use() -> None:
    fields = {"count": 1, "temp": 2.0, "ok": True, "other": object()}
    assert SEED(fields) == struct.pack("<if?", 1, 2.0, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("tRuE", True),
        (" yes ", True),
        ("YES", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("No", False),
        ("0", False),
        ("off", False),
        (True, True),
        (0, False),
        (b"yes", True),
    ],
)
def test_struct_bool_spellings(text: Any, expected: bool) -> None:
    payload = SEED({"count": 0, "temp": 0, "ok": text})
    assert struct.unpack("<if?", payload)[2] is expected


@pytest.mark.parametrize("text", ["maybe", "2", "", "tru", None, 2])
def test_struct_refuses_other_bool_values(text: Any) -> None:
    with pytest.raises(MappingError, match=r"^field 'ok': .* is not a boolean \(true/false"):
        SEED({"count": 0, "temp": 0, "ok": text})


@pytest.mark.parametrize(
    ("fmt", "value", "reason"),
    [
        ("<i", "3000000000", "is out of range for 'i' (-2147483648..2147483647)"),
        ("<i", 2**31, "is out of range for 'i' (-2147483648..2147483647)"),
        ("<B", 256, "is out of range for 'B' (0..255)"),
        ("<B", "-1", "is out of range for 'B' (0..255)"),
        ("<Q", -1, "is out of range for 'Q' (0..18446744073709551615)"),
        ("<h", 40000, "is out of range for 'h' (-32768..32767)"),
        ("<f", 1e40, "is out of range for 'f'"),
        ("<f", "1e40", "is out of range for 'f'"),
        ("<e", 70000, "is out of range for 'e'"),
        ("<d", 10**400, "is too large for a float"),
        ("<i", "12.5", "is not an integer"),
        ("<i", 12.5, "is not an integer"),
        ("<i", "abc", "is not an integer"),
        ("<d", "abc", "is not a number"),
        ("<d", None, "is not a number"),
        ("<4s", "hello", "is 5 bytes, more than 's' holds (4)"),
        ("<4p", "abcd", "is 4 bytes, more than 'p' holds (3)"),
        ("<c", "ab", "is not a single byte for 'c'"),
        ("<c", 300, "is not text or bytes for 'c'"),
        ("<4s", 12, "is not text or bytes for 's'"),
    ],
)
def test_struct_refuses_values_that_do_not_fit_naming_the_field(
    fmt: str, value: Any, reason: str
) -> None:
    with pytest.raises(MappingError) as caught:
        struct_encoder(fmt, "v")({"v": value})
    assert str(caught.value).startswith("field 'v': ")
    assert str(caught.value).endswith(reason)


def test_struct_error_example_from_the_contract() -> None:
    with pytest.raises(MappingError, match=r"^field 'temp': 'abc' is not a number$"):
        SEED({"count": 1, "temp": "abc", "ok": True})


def test_struct_missing_field_is_named() -> None:
    with pytest.raises(MappingError, match=r"^field 'temp' is missing$"):
        SEED({"count": 1, "ok": True})


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("<i", "4.0", 4),
        ("<i", "1e3", 1000),
        ("<i", 7.0, 7),
        ("<i", True, 1),
        ("<q", " -9223372036854775808 ", -(2**63)),
        ("<H", "65535", 65535),
        ("<d", "  -1.25 ", -1.25),
        ("<d", "nan", math.nan),
        ("<f", 7, 7.0),
        ("<4s", "ab", b"ab\x00\x00"),
        ("<4s", b"abcd", b"abcd"),
        ("<4s", bytearray(b"ab"), b"ab\x00\x00"),
        ("<3p", "ab", b"ab"),
        ("<c", "A", b"A"),
        ("<c", 65, b"A"),
        ("<c", b"\xff", b"\xff"),
        ("<4s", "é", "é".encode()),
    ],
)
def test_struct_converts_values_to_each_code(fmt: str, value: Any, expected: Any) -> None:
    (decoded,) = struct.unpack(fmt, struct_encoder(fmt, "v")({"v": value}))
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(decoded)
    elif fmt == "<4s" and isinstance(expected, bytes):
        assert decoded == expected.ljust(4, b"\x00")
    else:
        assert decoded == expected


def test_struct_with_pad_bytes_and_repeat_counts() -> None:
    encode = struct_encoder(">2hx?", "a", "b", "flag")
    assert encode({"a": "1", "b": -2, "flag": "no"}) == struct.pack(">2hx?", 1, -2, False)


def test_struct_native_format_uses_native_sizes() -> None:
    encode = struct_encoder("@lP", "a", "b")
    assert encode({"a": -1, "b": "7"}) == struct.pack("@lP", -1, 7)


@pytest.mark.parametrize("fmt", ["<iz", "<i4", "q<", "<n", "3"])
def test_struct_bad_format_is_a_config_error(fmt: str) -> None:
    error = config_error(STRUCT_CODEC, format=fmt, fields=["a"])
    assert error.loc == ("payload", "format")
    assert error.reason.startswith(f"bad struct format {fmt!r}")


@pytest.mark.parametrize(
    ("fmt", "fields", "reason"),
    [
        ("<if?", ["a", "b"], "format '<if?' packs 3 values but 2 fields are given"),
        ("<i", ["a", "b"], "format '<i' packs 1 value but 2 fields are given"),
        ("<3s", [], "format '<3s' packs 1 value but 0 fields are given"),
        ("<2x", ["a"], "format '<2x' packs 0 values but 1 field are given"),
    ],
)
def test_struct_field_count_must_match_the_format(fmt: str, fields: list[str], reason: str) -> None:
    error = config_error(STRUCT_CODEC, format=fmt, fields=fields)
    assert error.loc == ("payload", "fields")
    assert error.reason == reason


def test_struct_unknown_setting_is_a_config_error() -> None:
    error = config_error(STRUCT_CODEC, format="<i", fields=["a"], endian="little")
    assert error.loc == ("payload", "endian")


def test_struct_slots_follow_the_format() -> None:
    assert [slot.code for slot in format_slots("<2i3sx?")] == ["i", "i", "s", "?"]
    assert format_slots("<3s")[0].size == 3


# One value per code with the text a CSV would hold and the value struct reads back.
INT_CODES = {"b": 8, "B": 8, "h": 16, "H": 16, "i": 32, "I": 32, "q": 64, "Q": 64}


@st.composite
def struct_values(draw: st.DrawFn) -> tuple[str, list[Any], list[Any]]:
    """A format of random codes, field values (native or text), and the values they pack."""
    codes = draw(st.lists(st.sampled_from([*INT_CODES, "f", "d", "e", "?"]), max_size=8))
    given_values: list[Any] = []
    expected: list[Any] = []
    for code in codes:
        as_text = draw(st.booleans())
        if code in INT_CODES:
            bits = INT_CODES[code]
            low, high = (
                (0, 2**bits - 1) if code.isupper() else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            )
            value: Any = draw(st.integers(low, high))
            expected.append(value)
        elif code == "?":
            value = draw(st.booleans())
            expected.append(value)
            if as_text:
                value = draw(
                    st.sampled_from(
                        ["true", "yes", "1", "On"] if value else ["false", "no", "0", "OFF"]
                    )
                )
                as_text = False
        else:
            width = {"e": 16, "f": 32, "d": 64}[code]
            value = draw(st.floats(width=width, allow_nan=False))  # type: ignore[arg-type]
            expected.append(value)
        given_values.append(str(value) if as_text else value)
    return "<" + "".join(codes), given_values, expected


@settings(max_examples=300, deadline=None)
@given(struct_values())
def test_struct_payload_decodes_back_with_tuple_payload_type(
    case: tuple[str, list[Any], list[Any]],
) -> None:
    fmt, values, expected = case
    names = [f"f{i}" for i in range(len(values))]
    fields = dict(zip(names, values, strict=True))
    payload = struct_encoder(fmt, *names)(fields)
    assert TuplePayloadType(fmt).from_bytes(payload) == tuple(expected)


field_values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.sampled_from(["1", "-1", "4.0", "1e40", "yes", "nan", "255", "256", "é"]),
    st.binary(max_size=5),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(field_values, min_size=7, max_size=7))
def test_struct_generated_encoder_agrees_with_the_exact_one(values: list[Any]) -> None:
    config = StructCodecConfig(format="<bHf?d3sc", fields=[f"f{i}" for i in range(7)])
    fields = {f"f{i}": value for i, value in enumerate(values)}
    outcomes: list[bytes | str] = []
    for encode in (STRUCT_CODEC.factory(config), _exact_encoder(config)):
        try:
            outcomes.append(encode(fields))
        except MappingError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


# --- raw -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "value", "expected"),
    [
        ("utf-8", b"\x00\xff", b"\x00\xff"),
        ("utf-8", bytearray(b"ab"), b"ab"),
        ("utf-8", memoryview(b"ab"), b"ab"),
        ("utf-8", "héllo", "héllo".encode()),
        ("hex", "00ff10", b"\x00\xff\x10"),
        ("hex", "00 FF", b"\x00\xff"),
        ("hex", b"\x01", b"\x01"),  # bytes are always taken as they are
        ("base64", "AP8Q", b"\x00\xff\x10"),
        ("base64", "", b""),
    ],
)
def test_raw_payload_encodings(encoding: str, value: Any, expected: bytes) -> None:
    assert encoder(RAW_CODEC, field="data", encoding=encoding)({"data": value}) == expected


def test_raw_default_encoding_is_utf8() -> None:
    assert encoder(RAW_CODEC, field="data")({"data": "ä"}) == "ä".encode()


@pytest.mark.parametrize(
    ("encoding", "value", "reason"),
    [
        ("hex", "0g", "field 'data': '0g' is not valid hex"),
        ("hex", "abc", "field 'data': 'abc' is not valid hex"),
        ("base64", "A*==", "field 'data': 'A*==' is not valid base64"),
        ("utf-8", 12, "field 'data': 12 is not text or bytes (int)"),
        ("utf-8", None, "field 'data': None is not text or bytes (NoneType)"),
    ],
)
def test_raw_refuses_bad_values_naming_the_field(encoding: str, value: Any, reason: str) -> None:
    with pytest.raises(MappingError) as caught:
        encoder(RAW_CODEC, field="data", encoding=encoding)({"data": value})
    assert str(caught.value) == reason


def test_raw_missing_field_and_config_errors() -> None:
    with pytest.raises(MappingError, match=r"^field 'data' is missing$"):
        encoder(RAW_CODEC, field="data")({})
    assert config_error(RAW_CODEC).loc == ("payload", "field")
    assert config_error(RAW_CODEC, field="d", encoding="rot13").loc == ("payload", "encoding")


# --- json ----------------------------------------------------------------------------------


def test_json_encodes_every_field_compactly() -> None:
    payload = encoder(JSON_CODEC)({"temp": 12.5, "ok": True, "name": "ä", "n": None})
    assert payload == '{"temp":12.5,"ok":true,"name":"ä","n":null}'.encode()


def test_json_encodes_the_listed_fields_in_order() -> None:
    encode = encoder(JSON_CODEC, fields=["ok", "temp"])
    payload = encode({"temp": 1, "ok": False, "other": "x"})
    assert payload == b'{"ok":false,"temp":1}'
    assert json.loads(payload) == {"ok": False, "temp": 1}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "field 'v': nan is not a JSON value"),
        (b"\x00", "field 'v': b'\\x00' is not a JSON value"),
        ({1, 2}, "field 'v': {1, 2} is not a JSON value"),
    ],
)
def test_json_refuses_values_that_are_not_json_naming_the_field(value: Any, reason: str) -> None:
    with pytest.raises(MappingError) as caught:
        encoder(JSON_CODEC)({"ok": 1, "v": value})
    assert str(caught.value).startswith(reason)


def test_json_missing_listed_field_is_named() -> None:
    with pytest.raises(MappingError, match=r"^field 'temp' is missing$"):
        encoder(JSON_CODEC, fields=["temp"])({"ok": 1})


def test_json_encodes_nested_values() -> None:
    payload = encoder(JSON_CODEC)({"v": [1, {"a": "b"}, None], "t": {"x": -0.5}})
    assert payload == b'{"v":[1,{"a":"b"},null],"t":{"x":-0.5}}'


def test_json_refuses_a_value_that_contains_itself() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(MappingError, match=r"^field 'v': \[\[...\]\] is not a JSON value"):
        encoder(JSON_CODEC)({"v": loop})


@pytest.mark.parametrize("fmt", ["", "<", "@3x"])
def test_struct_format_without_values_packs_constant_bytes(fmt: str) -> None:
    assert struct_encoder(fmt)({"anything": 1}) == struct.pack(fmt)
