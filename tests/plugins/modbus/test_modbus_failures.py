"""Refused reads, exception responses, lost connections: what fails is isolated and reported.

A sparse register map is read with coalesced requests that span its holes; the device
refuses them (illegal data address), the source splits them, learns where the holes are,
and every valid point keeps arriving. Exception responses name the device and the point in
the log and in the metrics, once per failing point, with a count.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path
from typing import Any

from modbus_harness import Unit, pty_pair, tcp_server
from source_harness import config, device, poller, records_of, running, tcp, until
from structlog.testing import capture_logs

from tstoraged.testing import RecordingContext


def values_by_moid(context: RecordingContext, mid: int = 1) -> dict[int, set[float]]:
    seen: dict[int, set[float]] = {}
    for record in records_of(context, mid):
        seen.setdefault(record.key.moid, set()).add(struct.unpack("<d", record.value)[0])
    return seen


def meter(**settings: Any) -> dict[str, Any]:
    return {"name": "meter", "mid": 1, "timeout": 0.5, **settings}


SPARSE = {0: [10, 11, 0x4148, 0x0000], 10: [20, 21], 40: [30]}
"""Holding registers 0-3, 10-11 and 40; everything between is unmapped (illegal address)."""
SPARSE_POINTS = [
    {"name": "a", "address": 0, "moid": 1},
    {"name": "b", "address": 1, "moid": 2},
    {"name": "level", "address": 2, "type": "float32", "moid": 3},
    {"name": "c", "address": 10, "moid": 4},
    {"name": "d", "address": 11, "moid": 5},
    {"name": "e", "address": 40, "moid": 6},
    {"name": "ghost", "address": 25, "moid": 7},  # in a hole: the device refuses it alone
]


async def test_holes_in_a_sparse_map_are_learned_and_the_valid_points_keep_arriving(
    tmp_path: Path,
) -> None:
    unit = Unit(1, holding=SPARSE)
    async with tcp_server(unit) as server:
        settings = config(
            [meter(connection=tcp(server.port), points=SPARSE_POINTS, max_gap=30)],
            interval=0.1,
        )
        with capture_logs() as logs:
            async with running(settings, tmp_path) as (source, context):
                group = poller(source, "meter").group
                # max_gap = 30 makes one read of 0-40, which the device refuses.
                await until(lambda: group.polls >= 2, "the first polls")
                learned = len(unit.requests)
                await until(lambda: group.polls >= 8, "more polls")
                requests = len(unit.requests) - learned
                polls = group.polls
    # Learned: a, b, level; c, d; e -- three reads per poll, none refused any more.
    assert [(r.address, r.count) for r in group.plan.reads] == [(0, 4), (10, 2), (40, 1)]
    assert requests in (3 * (polls - 2), 3 * (polls - 2 - 1))  # a poll may be in flight
    assert values_by_moid(context) == {
        1: {10.0},
        2: {11.0},
        3: {12.5},
        4: {20.0},
        5: {21.0},
        6: {30.0},
    }
    failed = [e for e in logs if e["event"] == "modbus_point_failed"]
    assert [(e["device"], e["point"], e["address"]) for e in failed] == [
        ("meter", "ghost", "holding:25")
    ]
    assert failed[0]["error"] == "exception 0x02 (illegal data address)"
    assert (
        context.metric_value(
            "modbus_point_errors_total", device="meter", point="ghost", error="illegal_data_address"
        )
        == 1.0
    )
    assert context.details["device meter"]["first_failing"].startswith("ghost: exception 0x02")


async def test_a_point_that_keeps_failing_is_reported_once_with_a_count(tmp_path: Path) -> None:
    unit = Unit(1, holding=SPARSE)
    async with tcp_server(unit) as server:
        settings = config(
            [
                meter(
                    connection=tcp(server.port),
                    points=SPARSE_POINTS,
                    max_gap=0,
                    refused_point_retry=0.05,  # ask again at (nearly) every poll
                )
            ],
            interval=0.1,
        )
        with capture_logs() as logs:
            async with running(settings, tmp_path) as (source, context):
                await until(
                    lambda: (device(source, "meter").failing.get("ghost") or _NONE).count >= 5,
                    "five failures of the ghost point",
                )
                await until(
                    lambda: _count(context.details["device meter"].get("first_failing")) >= 5,
                    "the count in the device's status",
                )
                count = device(source, "meter").failing["ghost"].count
                metric = context.metric_value(
                    "modbus_point_errors_total",
                    device="meter",
                    point="ghost",
                    error="illegal_data_address",
                )
    assert [e["point"] for e in logs if e["event"] == "modbus_point_failed"] == ["ghost"]
    assert metric == count


class _NoFailure:
    count = 0


_NONE = _NoFailure()


def _count(first_failing: str | None) -> int:
    """The count at the end of ``"ghost: exception 0x02 (...) x7"``."""
    return int(first_failing.rsplit("x", 1)[1]) if first_failing else 0


async def test_busy_answers_are_repeated_after_the_busy_wait(tmp_path: Path) -> None:
    unit = Unit(1, holding={0: [42]})
    async with tcp_server(unit) as server:
        settings = config(
            [
                meter(
                    connection=tcp(server.port),
                    points=[{"name": "a", "address": 0, "moid": 1}],
                    busy_retries=3,
                    busy_wait=0.05,
                )
            ],
            interval=0.2,
        )
        unit.busy_answers = 2
        async with running(settings, tmp_path) as (source, context):
            await until(lambda: records_of(context, 1), "the first reading")
            first_poll = list(unit.requests[:3])
    assert values_by_moid(context) == {1: {42.0}}
    assert len(first_poll) == 3  # busy, busy, answered: one poll
    assert first_poll[1][0] - first_poll[0][0] >= 0.05  # busy_wait before each repeat
    assert (
        context.metric_value(
            "modbus_request_errors_total", device="meter", error="server_device_busy"
        )
        == 2.0
    )
    assert device(source, "meter").failing == {}


async def test_an_exception_names_device_and_point_and_recovery_is_logged(tmp_path: Path) -> None:
    unit = Unit(1, holding={0: [1, 2]})
    unit.exception = 0x04  # server device failure
    async with tcp_server(unit) as server:
        points = [{"name": "a", "address": 0, "moid": 1}, {"name": "b", "address": 1, "moid": 2}]
        settings = config([meter(connection=tcp(server.port), points=points)], interval=0.1)
        with capture_logs() as logs:
            async with running(settings, tmp_path) as (source, context):
                meter_device = device(source, "meter")
                await until(lambda: poller(source, "meter").group.polls >= 4, "four polls")
                assert meter_device.state == "up"  # it answers; its points fail
                assert set(meter_device.failing) == {"a", "b"}
                unit.exception = None
                await until(lambda: records_of(context, 1), "readings after the failure")
    failed = [(e["device"], e["point"]) for e in logs if e["event"] == "modbus_point_failed"]
    assert failed == [("meter", "a"), ("meter", "b")]
    recovered = [e for e in logs if e["event"] == "modbus_point_recovered"]
    assert {e["point"] for e in recovered} == {"a", "b"}
    assert all(e["failed"] >= 4 for e in recovered)
    assert context.metric_value(
        "modbus_point_errors_total", device="meter", point="a", error="server_device_failure"
    )
    assert values_by_moid(context) == {1: {1.0}, 2: {2.0}}


async def test_a_gateway_whose_target_does_not_answer_backs_the_device_off(
    tmp_path: Path,
) -> None:
    unit = Unit(5, holding={0: [1]})
    unit.exception = 0x0B  # gateway target device failed to respond
    async with tcp_server(unit) as server:
        settings = config(
            [
                meter(
                    connection=tcp(server.port),
                    unit=5,
                    points=[{"name": "a", "address": 0, "moid": 1}],
                    retries=0,
                )
            ],
            interval=0.05,
        )
        async with running(settings, tmp_path) as (source, context):
            await until(lambda: poller(source, "meter").group.deferred >= 3, "deferred polls")
            assert device(source, "meter").state == "not_answering"
            assert "no device answers (meter)" in (context.problem or "")
            unit.exception = None
            await until(lambda: records_of(context, 1), "a reading once the target answers")
            await until(lambda: context.problem is None, "the problem cleared")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_connection_that_cannot_be_made_is_a_problem_until_it_can(tmp_path: Path) -> None:
    port = free_port()
    settings = config(
        [
            meter(
                connection={**tcp(port), "reconnect_delay": 0.05, "reconnect_delay_max": 0.2},
                points=[{"name": "a", "address": 0, "moid": 1}],
            )
        ],
        interval=0.05,
    )
    async with running(settings, tmp_path) as (source, context):
        await until(lambda: context.problem, "the problem")
        assert f"cannot connect to tcp 127.0.0.1:{port}" in context.problem
        assert context.details["connection @meter"]["state"] == "down"
        assert device(source, "meter").state == "connection_down"
        from pymodbus.server import ModbusTcpServer

        unit = Unit(1, holding={0: [7]})
        server = ModbusTcpServer([unit.sim_device()], address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        try:
            await until(lambda: records_of(context, 1), "readings once the device listens")
            await until(lambda: context.problem is None, "the problem cleared")
        finally:
            await server.shutdown()
    assert values_by_moid(context) == {1: {7.0}}


async def test_close_after_poll_connects_for_every_poll(tmp_path: Path) -> None:
    unit = Unit(1, holding={0: [7]})
    async with tcp_server(unit) as server:
        settings = config(
            [
                meter(
                    connection=tcp(server.port),
                    points=[{"name": "a", "address": 0, "moid": 1}],
                    close_after_poll=True,
                )
            ],
            interval=0.05,
        )
        async with running(settings, tmp_path) as (source, _):
            await until(lambda: poller(source, "meter").group.polls >= 4, "four polls")
            link = device(source, "meter").link
            polls = poller(source, "meter").group.polls
            assert link.connects in (polls, polls + 1)


async def test_pauses_after_connect_and_between_requests_are_kept(tmp_path: Path) -> None:
    unit = Unit(1, holding={0: [1], 50: [2]})
    connected: list[float] = []
    async with tcp_server(unit) as server:
        original = server.server.callback_new_connection

        def traced() -> Any:
            connected.append(asyncio.get_running_loop().time())
            return original()

        server.server.callback_new_connection = traced  # type: ignore[method-assign]
        points = [{"name": "a", "address": 0, "moid": 1}, {"name": "b", "address": 50, "moid": 2}]
        settings = config(
            [
                meter(
                    connection=tcp(server.port),
                    points=points,
                    max_gap=0,
                    pause_after_connect=0.15,
                    pause_between_requests=0.1,
                )
            ],
            interval=1.0,
        )
        async with running(settings, tmp_path) as (_, context):
            await until(lambda: len(records_of(context, 1)) >= 2, "one poll")
    first, second = unit.requests[0][0], unit.requests[1][0]
    assert first - connected[0] >= 0.15
    assert second - first >= 0.1


async def test_a_response_that_stalls_is_dropped_after_the_byte_timeout(tmp_path: Path) -> None:
    """A device on a serial line that sends half a frame, then nothing."""
    import serial

    with pty_pair() as line:
        device_port = serial.Serial(line.device_side, baudrate=19200, timeout=0)
        loop = asyncio.get_running_loop()
        half_frames = 0

        def answer_half() -> None:
            nonlocal half_frames
            if device_port.read(64):
                device_port.write(bytes([1, 3, 2, 0]))  # unit 1, FC 3, 2 bytes, one of them
                half_frames += 1

        loop.add_reader(device_port.fileno(), answer_half)
        try:
            bus = {
                "transport": "serial",
                "port": line.master_side,
                "parity": "N",
                "byte_timeout": 0.05,
            }
            settings = config(
                [
                    meter(
                        connection=bus,
                        points=[{"name": "a", "address": 0, "moid": 1}],
                        timeout=30,
                        retries=0,
                    )
                ],
                interval=0.1,
            )
            async with running(settings, tmp_path) as (source, context):
                await until(
                    lambda: context.metric_value(
                        "modbus_request_errors_total", device="meter", error="incomplete_frame"
                    ),
                    "an incomplete frame",
                )
                assert device(source, "meter").error is not None
                assert "byte_timeout" in device(source, "meter").error
        finally:
            loop.remove_reader(device_port.fileno())
            device_port.close()
    assert half_frames >= 1
