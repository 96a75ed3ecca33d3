"""Register decoding and read planning: the sans-I/O core of the modbus source."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modbus_harness import ORDERS, SAMPLES, registers_of
from tstoraged_modbus.codec import MODBUS_CODEC, ModbusCodecConfig
from tstoraged_modbus.datatypes import RegisterBuffers, ValueDecoder, decode_all
from tstoraged_modbus.plan import PlannedPoint, ReadPlan, plan_reads


def test_the_worked_example_of_the_docs() -> None:
    """float32 123.456 = 0x42F6E979 in the four orders (docs/sources/modbus.md)."""
    sent = {
        "ABCD": [0x42F6, 0xE979],
        "CDAB": [0xE979, 0x42F6],
        "BADC": [0xF642, 0x79E9],
        "DCBA": [0x79E9, 0xF642],
    }
    for order, registers in sent.items():
        value = ValueDecoder("float32", order).decode(RegisterBuffers(registers), 0)
        assert f"{value:.7g}" == "123.456", order


@pytest.mark.parametrize("data_type", list(SAMPLES))
@pytest.mark.parametrize("order", ORDERS)
def test_every_type_decodes_in_every_order(data_type: str, order: str) -> None:
    value = SAMPLES[data_type]
    words = [0xDEAD, *registers_of(data_type, order, value), 0xBEEF]  # at an offset
    length = len(words) - 2 if data_type == "string" else None
    decoder = ValueDecoder(data_type, order, length=length)  # type: ignore[arg-type]
    assert decoder.decode(RegisterBuffers(words), 1) == value


@given(st.integers(-(2**63), 2**63 - 1), st.sampled_from(ORDERS))
def test_int64_round_trips_in_every_order(value: int, order: str) -> None:
    words = registers_of("int64", order, value)
    assert ValueDecoder("int64", order).decode(RegisterBuffers(words), 0) == value  # type: ignore[arg-type]


@given(st.floats(allow_nan=False, width=32), st.sampled_from(ORDERS))
def test_float32_round_trips_in_every_order(value: float, order: str) -> None:
    words = registers_of("float32", order, value)
    assert ValueDecoder("float32", order).decode(RegisterBuffers(words), 0) == value  # type: ignore[arg-type]


def test_bits_of_a_register_follow_its_byte_order() -> None:
    registers = RegisterBuffers([0x0102])  # bit 1 and bit 8 set as sent
    assert [ValueDecoder("bool", "ABCD", bit=b).decode(registers, 0) for b in (1, 8)] == [
        True,
        True,
    ]
    # Byte-swapped device: the register's value is 0x0201, bits 0 and 9.
    assert [ValueDecoder("bool", "BADC", bit=b).decode(registers, 0) for b in (0, 9)] == [
        True,
        True,
    ]


def test_strings_lose_their_padding() -> None:
    words = registers_of("string", "ABCD", "AB\x00\x00")
    assert ValueDecoder("string", "ABCD", length=2).decode(RegisterBuffers(words), 0) == "AB"


def test_the_probe_table_has_every_type_that_fits() -> None:
    table = decode_all([0x42F6, 0xE979])
    assert list(table) == ["int16", "uint16", "int32", "uint32", "float32", "string"]
    assert f"{table['float32']['ABCD']:.7g}" == "123.456"
    assert table["uint16"] == {"ABCD": 0x42F6, "CDAB": 0x42F6, "BADC": 0xF642, "DCBA": 0xF642}


def test_the_modbus_codec_writes_float64_int64_and_text() -> None:
    encode = MODBUS_CODEC.factory(ModbusCodecConfig())
    assert encode({"value": 1.5}) == struct.pack("<d", 1.5)
    assert encode({"value": -2}) == struct.pack("<q", -2)
    assert encode({"value": 2**64 - 1}) == struct.pack("<Q", 2**64 - 1)
    assert encode({"value": "TS-01"}) == b"TS-01"
    assert math.isnan(struct.unpack("<d", encode({"value": math.nan}))[0])


def points(*spans: tuple[int, int], table: str = "holding") -> list[PlannedPoint[int]]:
    return [PlannedPoint(table, a, w, i) for i, (a, w) in enumerate(spans)]  # type: ignore[arg-type]


def test_points_coalesce_up_to_the_gap_and_the_protocol_limits() -> None:
    spans = [(0, 2), (2, 1), (5, 2), (20, 1), (130, 1)]
    reads = plan_reads(points(*spans), max_gap=3)
    assert [(r.address, r.count, [p.point for p in r.points]) for r in reads] == [
        (0, 7, [0, 1, 2]),
        (20, 1, [3]),
        (130, 1, [4]),
    ]
    big = plan_reads(points((0, 100), (100, 30)), max_gap=0)
    assert [(r.address, r.count) for r in big] == [(0, 100), (100, 30)]  # 130 > 125
    bits = plan_reads(points((0, 1), (1999, 1), (2000, 1), table="coil"), max_gap=2000)
    assert [(r.address, r.count) for r in bits] == [(0, 2000), (2000, 1)]


def test_a_refused_read_is_split_at_its_widest_gap_and_the_cut_is_kept() -> None:
    plan = ReadPlan(tuple(points((0, 2), (2, 1), (10, 1), (12, 2))), max_gap=10)
    (read,) = plan.reads
    first, second = plan.split(read)
    assert [(first.address, first.count), (second.address, second.count)] == [(0, 3), (10, 4)]
    assert [(r.address, r.count) for r in plan.reads] == [(0, 3), (10, 4)]
    plan.refuse(second.points[0])
    assert [(r.address, r.count) for r in plan.reads] == [(0, 3), (12, 2)]
    assert [p.point for p in plan.retry_refused()] == [2]
    assert [(r.address, r.count) for r in plan.reads] == [(0, 3), (10, 1), (12, 2)]


def test_bits_of_one_register_are_never_split_apart() -> None:
    plan = ReadPlan(tuple(points((5, 1), (5, 1), (5, 1))), max_gap=0)
    with pytest.raises(ValueError, match="overlap"):
        plan.split(plan.reads[0])
