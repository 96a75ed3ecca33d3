"""A device that stops answering costs its bus little and holds nobody else back.

The schedules' own records are the evidence: every healthy poller has skipped no tick, and
the ticks its records carry (capture_time = "scheduled") are consecutive, while the silent
device times out, is backed off (deferred polls) and recovers when it answers again.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from modbus_harness import Running, Unit, pty_pair, serial_server, tcp_server
from source_harness import (
    config,
    device,
    poller,
    records_of,
    running,
    tcp,
    tick_indexes,
    until,
)

INTERVAL = 0.25  # exact in binary: tick instants are exact multiples
INTERVAL_NS = 250_000_000


def meter(unit: int) -> Unit:
    return Unit(unit, holding={0: [unit, 100 + unit, 0x4148, 0x0000]})  # float32 12.5 at 2


def points() -> list[dict[str, Any]]:
    return [
        {"name": "id", "address": 0, "moid": 1},
        {"name": "count", "address": 1, "moid": 2},
        {"name": "level", "address": 2, "type": "float32", "moid": 3},
    ]


def devices(connection: Any, units: list[int], **settings: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": f"m{unit}",
            "connection": connection,
            "unit": unit,
            "mid": unit,
            "points": points(),
            **settings,
        }
        for unit in units
    ]


@asynccontextmanager
async def shared_tcp(units: list[Unit]) -> AsyncIterator[tuple[Running, dict[str, Any]]]:
    async with tcp_server(*units) as server:
        yield server, {"connections": {"gateway": tcp(server.port)}}


@asynccontextmanager
async def shared_serial(units: list[Unit]) -> AsyncIterator[tuple[Running, dict[str, Any]]]:
    with pty_pair() as line:
        async with serial_server(line.device_side, *units) as server:
            bus = {"transport": "serial", "port": line.master_side, "parity": "N"}
            yield server, {"connections": {"gateway": bus}}


def shared(kind: str, units: list[Unit]) -> AbstractAsyncContextManager[tuple[Running, Any]]:
    return shared_tcp(units) if kind == "tcp" else shared_serial(units)


@pytest.mark.parametrize("kind", ["tcp", "serial"])
async def test_a_unit_that_stops_answering_on_a_shared_connection_holds_no_one_back(
    tmp_path: Path, kind: str
) -> None:
    units = [meter(1), meter(2), meter(3)]
    async with shared(kind, units) as (server, connections):
        settings = config(
            devices("gateway", [1, 2, 3], timeout=0.1, retries=0, backoff_max=1.0),
            capture_time="scheduled",
            poll_groups={"default": {"interval": INTERVAL, "max_lateness": 0.2}},
            **connections,
        )
        async with running(settings, tmp_path) as (source, context):
            await until(lambda: all(p.group.polls >= 2 for p in source.pollers), "first polls")
            server.units[2].silent = True
            silent_from = len(server.units[2].requests)
            healthy_from = {mid: len(records_of(context, mid)) for mid in (1, 3)}
            await until(
                lambda: (
                    device(source, "m2").state == "not_answering"
                    and poller(source, "m2").group.deferred >= 4
                ),
                "the silent unit backed off",
            )
            await until(
                lambda: all(
                    len(records_of(context, mid)) >= healthy_from[mid] + 36 for mid in (1, 3)
                ),
                "a dozen more polls of the healthy units",
            )
            assert context.problem is None  # the others answer: the connection works
            details = context.details
            silent_requests = len(server.units[2].requests) - silent_from
            deferred = poller(source, "m2").group.deferred
            server.units[2].silent = False
            await until(lambda: device(source, "m2").state == "up", "the unit answering again")
            await until(lambda: len(records_of(context, 2)) > 0, "readings of the recovered unit")

    for mid in (1, 3):
        schedule = poller(source, f"m{mid}").schedule
        assert schedule.skipped_total == 0
        ticks = tick_indexes(records_of(context, mid), INTERVAL_NS)
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # no tick without readings
        # Every poll brought all three points, decoded.
        values = {struct.unpack("<d", r.value)[0] for r in records_of(context, mid)}
        assert values == {float(mid), 100.0 + mid, 12.5}
    # Backed off: the silent unit was asked less often than its schedule ticked.
    assert silent_requests < deferred
    assert details["device m2"]["state"] == "not_answering"
    assert details["device m2"]["error"] == "no response within 0.1 s"
    assert details["device m1"]["state"] == details["device m3"]["state"] == "up"
    assert context.metric_value("modbus_request_errors_total", device="m2", error="timeout")
    assert context.metric_value("modbus_device_up", device="m2") == 1.0


async def test_a_silent_device_on_its_own_connection_does_not_delay_another_connection(
    tmp_path: Path,
) -> None:
    """Its polls run long (timeout 0.6 s > interval): they are skipped and counted there only."""
    async with tcp_server(meter(1)) as healthy, tcp_server(meter(2)) as dead:
        dead.units[2].silent = True
        settings = config(
            [
                *devices(tcp(healthy.port), [1]),
                *devices(tcp(dead.port), [2], timeout=0.6, retries=0, backoff_max=0.25),
            ],
            capture_time="scheduled",
            poll_groups={"default": {"interval": INTERVAL, "max_lateness": 0.2}},
        )
        async with running(settings, tmp_path) as (source, context):
            await until(lambda: poller(source, "m2").schedule.skipped_total >= 4, "skipped polls")
            await until(lambda: len(records_of(context, 1)) >= 36, "a dozen polls of m1")
    assert poller(source, "m1").schedule.skipped_total == 0
    ticks = tick_indexes(records_of(context, 1), INTERVAL_NS)
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))
    assert context.metric_value("modbus_polls_skipped_total", device="m2", group="default") == (
        poller(source, "m2").schedule.skipped_total
    )
    assert "no device answers (m2)" in (context.problem or "")
