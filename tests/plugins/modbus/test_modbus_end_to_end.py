"""Modbus devices -> the daemon's real pipeline -> the project's TStorage-compatible server.

A pymodbus server holds every data type in every byte/word order; the daemon polls it over
Modbus TCP and over RTU on a socat pty pair, and the exact decoded values must arrive in
tstorage-server under the configured keys.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from modbus_harness import Unit, every_type_case, pty_pair, serial_server, tcp_server

from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_server.testing import RunningServer, serve_async
from tstoraged.config.loader import load_config
from tstoraged.plugins import PluginManager
from tstoraged.runtime.app import Daemon

ENV = {"TSTORAGED_LOAD_PLUGINS": "codecs,modbus"}
DEADLINE_S = 30.0
CID = 3
MID = 100


def toml_value(value: Any) -> str:
    """A TOML inline value (JSON spells strings, numbers, booleans and arrays the same way)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def daemon_config(tmp_path: Path, server: RunningServer, source: str) -> Path:
    path = tmp_path / "tstoraged.toml"
    path.write_text(
        f"""
[tstorage]
host = "{server.host}"
port = {server.port}

[batch]
flush_interval = "50ms"

[metrics]
enabled = false

[log]
level = "warning"

[daemon]
state_dir = "{tmp_path / "state"}"

{source}
"""
    )
    return path


@asynccontextmanager
async def running_daemon(config: Path) -> AsyncIterator[Daemon]:
    plugins = PluginManager.from_entry_points(ENV)
    daemon = Daemon(load_config(config, ENV, plugins), plugins, env=ENV, configure_logs=False)
    task = asyncio.create_task(daemon.run())
    try:
        yield daemon
    finally:
        daemon.request_stop()
        result = await task
        assert result.exit_code == 0


async def stored(server: RunningServer) -> list[Record[bytes]]:
    channel: AsyncChannel[bytes] = AsyncChannel(server.host, server.port, BytesPayloadType())
    async with channel:
        response = await channel.get(Key(CID, -(2**63), -(2**31), -(2**63), -(2**63)), Key.max())
    assert response, response
    return [record for record in response.data if isinstance(record, Record)]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def latest_by_moid(records: list[Record[bytes]]) -> dict[tuple[int, int], bytes]:
    latest: dict[tuple[int, int], tuple[int, bytes]] = {}
    for record in records:
        key = (record.key.mid, record.key.moid)
        if key not in latest or record.key.cap > latest[key][0]:
            latest[key] = (record.key.cap, record.value)
    return {key: value for key, (_, value) in latest.items()}


def decoded(payload: bytes, expected: Any) -> Any:
    """A payload as the modbus codec wrote it, read the way the expected value's type says."""
    if isinstance(expected, str):
        return payload.decode()
    if isinstance(expected, float):
        return struct.unpack("<d", payload)[0]
    return struct.unpack("<Q" if expected > 2**63 - 1 else "<q", payload)[0]


def source_table(connection: dict[str, Any], points: list[dict[str, Any]], **device: Any) -> str:
    lines = [
        "[[sources]]",
        'type = "modbus"',
        'name = "plant"',
        f"cid = {CID}",
        'interval = "200ms"',
        "",
        "[[sources.devices]]",
        'name = "meter-1"',
        f"connection = {toml_value(connection)}",
        f"mid = {MID}",
        "timeout = 0.5",
        *(f"{key} = {toml_value(value)}" for key, value in device.items()),
        "points = [",
        *(f"  {toml_value(point)}," for point in points),
        "]",
    ]
    return "\n".join(lines)


def extra_points() -> tuple[dict[int, list[int]], list[dict[str, Any]], dict[int, Any]]:
    """Bits, coils, discrete and input registers, scale/offset, PLC numbering (address_base 1)."""
    holding = {1000: [0b1000_0000_0000_0101, 2500]}
    points = [
        # address_base = 1: register 1001 in the manual is protocol address 1000.
        {"name": "status_bit0", "address": 1001, "type": "bool", "bit": 0, "moid": 901},
        {"name": "status_bit1", "address": 1001, "type": "bool", "bit": 1, "moid": 902},
        {"name": "status_bit15", "address": 1001, "type": "bool", "bit": 15, "moid": 903},
        {"name": "temperature", "address": 1002, "scale": 0.1, "offset": -40.0, "moid": 904},
        # Every table is numbered from 1: coil 4 is protocol address 3.
        {"name": "relay", "table": "coil", "address": 4, "moid": 905},
        {"name": "door", "table": "discrete_input", "address": 3, "moid": 906},
        {"name": "count", "table": "input", "address": 12, "encoding": "integer", "moid": 907},
    ]
    expected = {901: 1.0, 902: 0.0, 903: 1.0, 904: 2500 * 0.1 - 40.0, 905: 1.0, 906: 0.0, 907: 77}
    return holding, points, expected


async def test_every_type_in_every_order_arrives_exactly_over_modbus_tcp(tmp_path: Path) -> None:
    case = every_type_case(start=100)
    holding, points, expected = extra_points()
    # Shift the case to 1-based numbering too: the device config says address_base = 1.
    case_points = [{**p, "address": p["address"] + 1} for p in case.points]
    unit = Unit(
        1,
        holding={**case.holding, **holding},
        input={10: [5, 77]},
        coils={0: [False, False, False, True]},
        discrete={0: [True, True, False, True]},
    )
    async with tcp_server(unit) as modbus, serve_async() as server:
        connection = {"transport": "tcp", "host": "127.0.0.1", "port": modbus.port}
        config = daemon_config(
            tmp_path, server, source_table(connection, case_points + points, address_base=1)
        )
        want = {**case.expected, **expected}
        async with running_daemon(config):

            async def all_arrived() -> bool:
                return len(latest_by_moid(await stored(server))) == len(want)

            await eventually(all_arrived, "a record of every point")
        records = await stored(server)
    latest = latest_by_moid(records)
    assert set(latest) == {(MID, moid) for moid in want}
    assert {moid: decoded(latest[(MID, moid)], value) for moid, value in want.items()} == want


async def test_every_type_in_every_order_arrives_exactly_over_rtu_on_a_serial_line(
    tmp_path: Path,
) -> None:
    case = every_type_case(start=0)
    with pty_pair() as line:
        unit = Unit(7, holding=case.holding)
        async with serial_server(line.device_side, unit), serve_async() as server:
            connection = {
                "transport": "serial",
                "port": line.master_side,
                "baudrate": 19200,
                "parity": "N",  # ptys refuse parity
                "byte_timeout": 0.2,
            }
            config = daemon_config(tmp_path, server, source_table(connection, case.points, unit=7))
            async with running_daemon(config):

                async def all_arrived() -> bool:
                    return len(latest_by_moid(await stored(server))) == len(case.expected)

                await eventually(all_arrived, "a record of every point")
            records = await stored(server)
    latest = latest_by_moid(records)
    assert {
        moid: decoded(latest[(MID, moid)], value) for moid, value in case.expected.items()
    } == case.expected


def test_device_state_shows_in_status_and_a_dead_connection_in_health(tmp_path: Path) -> None:
    """The real daemon process: /status details, /readyz, /metrics and `tstoraged status`."""
    import socket
    import subprocess
    import sys

    from tstoraged.testing import DaemonProcess, wait_until

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    connection = {"transport": "tcp", "host": "127.0.0.1", "port": port}
    config = tmp_path / "tstoraged.toml"
    config.write_text(
        f"""
[tstorage]
port = 1

[metrics]
listen = "127.0.0.1:0"

[daemon]
state_dir = "{tmp_path / "state"}"

{source_table(connection, [{"name": "level", "address": 0, "moid": 1}])}
"""
    )
    with DaemonProcess(config, env=ENV) as daemon:
        daemon.wait_for_event("daemon_started")
        problem = wait_until(
            lambda: daemon.source_status("plant").get("problem"),
            what="the connection problem in /status",
        )
        assert problem.startswith(f"connection @meter-1: cannot connect to tcp 127.0.0.1:{port}: ")

        def device_down() -> dict[str, Any] | None:
            details: dict[str, Any] = daemon.source_status("plant").get("details", {})
            state = details.get("device meter-1", {}).get("state")
            return details if state == "connection_down" else None

        details = wait_until(device_down, what="the device state in /status")
        assert details["connection @meter-1"]["state"] == "down"
        code, body = daemon.get("/readyz")
        assert code == 503
        assert json.loads(body)["reason"].startswith("source plant: connection @meter-1")
        _, exposition = daemon.get("/metrics")
        assert 'tstoraged_modbus_device_up{device="meter-1",source="plant"} 0.0' in exposition
        shown = subprocess.run(
            [sys.executable, "-m", "tstoraged.cli", "status", "--url", daemon.url],
            capture_output=True,
            text=True,
            env={**ENV, "COLUMNS": "200", "PATH": ""},
            check=False,
        )
        assert "device meter-1" in shown.stdout
        assert "state=connection_down" in shown.stdout
        assert daemon.terminate() == 0
