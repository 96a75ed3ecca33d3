"""RTU framed over TCP (a serial server) against a real pymodbus peer, and what ``cap`` is:
the instant the request was sent, or the one its answer arrived."""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from modbus_harness import Unit, tcp_server
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from source_harness import config, records_of, running, tcp, until

from tstorage_client.timestamp import OFFSET_NS

HOLD_S = 0.3
"""How long the slow device holds each answer."""


@dataclass
class SlowUnit(Unit):
    """A device that answers every request ``HOLD_S`` after it arrived."""

    async def _action(
        self,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        _values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        answer = await super()._action(function_code, _start, address, count, _registers, _values)
        await asyncio.sleep(HOLD_S)
        return answer


async def test_rtu_framed_over_tcp_reads_a_serial_server(tmp_path: Path) -> None:
    unit = Unit(7, holding={0: [1234, 0x4148, 0x0000]})
    async with tcp_server(unit, framer=FramerType.RTU) as server:
        connection = {**tcp(server.port), "transport": "rtu_over_tcp"}
        points = [
            {"name": "count", "address": 0, "moid": 1},
            {"name": "level", "address": 1, "type": "float32", "moid": 2},
        ]
        device = {"name": "meter", "mid": 1, "unit": 7, "timeout": 0.5, "points": points}
        settings = config([{**device, "connection": connection}], interval=0.1)
        async with running(settings, tmp_path) as (_, context):
            await until(lambda: len(records_of(context, 1)) >= 2, "a poll")
    values = {r.key.moid: struct.unpack("<d", r.value)[0] for r in records_of(context, 1)}
    assert values == {1: 1234.0, 2: 12.5}
    assert unit.requests  # the RTU-framed requests reached the unit


@pytest.mark.parametrize("capture_time", ["request", "response"])
async def test_cap_is_when_the_request_left_or_when_the_answer_came(
    tmp_path: Path, capture_time: str
) -> None:
    unit = SlowUnit(1, holding={0: [5]})
    wall_minus_monotonic = time.time_ns() - time.monotonic_ns()
    async with tcp_server(unit) as server:
        device = {"name": "meter", "mid": 1, "timeout": 2.0, "connection": tcp(server.port)}
        points = [{"name": "a", "address": 0, "moid": 1}]
        settings = config([{**device, "points": points}], interval=1.0, capture_time=capture_time)
        async with running(settings, tmp_path) as (_, context):
            (record, *_) = await until(lambda: records_of(context, 1), "the first reading")
    arrived_ns = round(unit.requests[0][0] * 1e9) + wall_minus_monotonic
    cap_ns = record.key.cap + OFFSET_NS
    # The device held its answer HOLD_S: the request instant is before the middle of that
    # hold, the response instant after it.
    middle_ns = arrived_ns + round(HOLD_S / 2 * 1e9)
    if capture_time == "request":
        assert cap_ns < middle_ns
    else:
        assert cap_ns > middle_ns
