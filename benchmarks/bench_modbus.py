"""Modbus source under load: 50 TCP devices x 100 points at 1 s, and one RTU bus of 8 devices.

Part ``tcp``: 50 simulated Modbus TCP devices (pymodbus servers in a separate process, one
port each, 100 points in 160 registers: 2 reads per poll) polled every second through the
whole daemon (mapping, pipeline, tstorage-server in its own process). Reported: the daemon's
CPU (its process alone: the simulators and the server run elsewhere), poll jitter (the first
request of each poll minus its scheduled instant, p50/p99) and missed polls (ticks without
readings between a device's first and last poll). The jitter is split per tick into when the
earliest device's request left (``first_device``: the wake-up) and how much later the last
device's left (``spread``: the devices one after the other).

Part ``rtu``: one RTU bus (a socat pty pair) of 8 devices at 19200 baud, one of which never
answers. A pty moves bytes at once, so the simulator holds each answer for the time request
and response take on a 19200 baud line (11 bits a character). Reported: the healthy devices'
poll period (p50/p99/max) and missed polls, and how often the dead device was tried.

    .venv/bin/python benchmarks/bench_modbus.py                      # 5 minutes of tcp, 1 of rtu
    .venv/bin/python benchmarks/bench_modbus.py --duration 30 --rtu-duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

INTERVAL = 1.0
TCP_DEVICES = 50
RTU_DEVICES = 8
DEAD_UNIT = 8
BAUD = 19200


def registers() -> list[int]:
    """160 registers: 40 float32, 40 uint16, 20 int32 (100 points)."""
    return [(i * 7919) & 0xFFFF for i in range(160)]


def tcp_points() -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    address = 0
    for index in range(100):
        data_type = "float32" if index < 40 else "uint16" if index < 80 else "int32"
        points.append({"name": f"p{index}", "address": address, "type": data_type, "moid": index})
        address += 1 if data_type == "uint16" else 2
    return points


# -- the simulators (a separate process) -----------------------------------------------------


async def serve(tcp_count: int, pty: str | None) -> None:
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def device(unit: int, action: Any = None) -> SimDevice:
        holding = [SimData(0, values=registers(), datatype=DataType.REGISTERS)]
        empty = [SimData(0, values=[False], datatype=DataType.BITS)]
        ir = [SimData(0, values=[0], datatype=DataType.REGISTERS)]
        return SimDevice(id=unit, simdata=(empty, empty, holding, ir), action=action)

    servers = []
    ports = []
    for _ in range(tcp_count):
        server = ModbusTcpServer([device(1)], address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        servers.append(server)
        ports.append(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    never = asyncio.Event()

    async def on_the_line(unit: int, fc: int, _s: int, _a: int, count: int, *_: Any) -> Any:
        if unit == DEAD_UNIT:
            await never.wait()
        # Hold the answer for the line time of request (8 bytes) and response (5 + 2n).
        await asyncio.sleep((8 + 5 + 2 * count) * 11 / BAUD)
        return None

    if pty is not None:
        import functools

        units = [
            device(unit, functools.partial(on_the_line, unit)) for unit in range(1, RTU_DEVICES + 1)
        ]
        serial = ModbusSerialServer(units, port=pty, baudrate=BAUD, parity="N", reconnect_delay=0)
        await serial.serve_forever(background=True)
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed


# -- the daemon (this process) ---------------------------------------------------------------


def daemon_config(server_port: int, state: Path, sources: str) -> str:
    return f"""
[tstorage]
port = {server_port}
[metrics]
enabled = false
[log]
level = "warning"
[daemon]
state_dir = "{state}"
{sources}
"""


def tcp_source(ports: list[int]) -> str:
    lines = ["[[sources]]", 'type = "modbus"', 'name = "tcp"', "cid = 1", f"interval = {INTERVAL}"]
    points = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in p.items()) + " }"
        for p in tcp_points()
    )
    lines.append(f"maps = {{ meter = [{points}] }}")
    for index, port in enumerate(ports):
        lines += [
            "[[sources.devices]]",
            f'name = "tcp-{index}"',
            f'connection = {{ transport = "tcp", host = "127.0.0.1", port = {port} }}',
            f"mid = {index + 1}",
            'map = "meter"',
        ]
    return "\n".join(lines)


def rtu_source(pty: str) -> str:
    lines = [
        "[[sources]]",
        'type = "modbus"',
        'name = "rtu"',
        "cid = 2",
        f"interval = {INTERVAL}",
        f'[sources.connections.bus]\ntransport = "serial"\nport = "{pty}"\nbaudrate = {BAUD}',
        'parity = "N"',
    ]
    for unit in range(1, RTU_DEVICES + 1):
        lines += [
            "[[sources.devices]]",
            f'name = "rtu-{unit}"',
            'connection = "bus"',
            f"unit = {unit}",
            f"mid = {unit}",
            "timeout = 0.2",
            "retries = 1",
            'points = [{ address = 0, type = "float32", moid = 1 }, '
            '{ address = 2, moid = 2 }, { address = 3, type = "int32", moid = 3 }]',
        ]
    return "\n".join(lines)


async def run_daemon(config: Path, seconds: float) -> tuple[float, float, tuple[float, float]]:
    """Run the daemon for ``seconds`` after a warm-up: its CPU seconds, the wall time, and the
    measured window (Unix seconds)."""
    from tstoraged.config import load_config
    from tstoraged.plugins import PluginManager
    from tstoraged.runtime.app import Daemon

    plugins = PluginManager.from_entry_points(os.environ)
    daemon = Daemon(load_config(config, plugins=plugins), plugins, configure_logs=False)
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(3.0)  # connect, first polls
    cpu0, wall0, start = time.process_time(), time.perf_counter(), time.time()
    await asyncio.sleep(seconds)
    cpu, wall, end = time.process_time() - cpu0, time.perf_counter() - wall0, time.time()
    daemon.request_stop()
    await task
    return cpu, wall, (start, end)


def read_back(port: int, cid: int) -> list[tuple[int, int, int]]:
    """(mid, moid, cap in Unix ns) of every stored record of ``cid``."""
    from tstorage_client.channel import Channel
    from tstorage_client.payload_type import BytesPayloadType
    from tstorage_client.record import Key, Record
    from tstorage_client.timestamp import OFFSET_NS

    with Channel("127.0.0.1", port, BytesPayloadType()) as channel:
        response = channel.get(Key(cid, -(2**63), -(2**31), -(2**63), -(2**63)), Key.max())
    return [
        (r.key.mid, r.key.moid, r.key.cap + OFFSET_NS)
        for r in response.data
        if isinstance(r, Record) and r.key.cid == cid
    ]


def polls_of(
    records: list[tuple[int, int, int]], window: tuple[float, float]
) -> dict[int, dict[int, int]]:
    """Per device: tick index -> the first request time of that poll (Unix ns), for the ticks
    inside the measured window (the warm-up's first connects are not polls on schedule)."""
    polls: dict[int, dict[int, int]] = defaultdict(dict)
    interval_ns = int(INTERVAL * 1e9)
    first_tick, last_tick = int(window[0] // INTERVAL) + 1, int(window[1] // INTERVAL) - 1
    for mid, _, cap in records:
        tick = cap // interval_ns
        if not first_tick <= tick <= last_tick:
            continue
        first = polls[mid].get(tick)
        if first is None or cap < first:
            polls[mid][tick] = cap
    return polls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def missed(ticks: dict[int, int], window: tuple[float, float]) -> int:
    """Ticks of the window without a poll."""
    expected = int(window[1] // INTERVAL) - 1 - (int(window[0] // INTERVAL) + 1) + 1
    return expected - len(ticks)


def tcp_report(
    records: list[tuple[int, int, int]], cpu: float, wall: float, window: tuple[float, float]
) -> dict[str, Any]:
    interval_ns = int(INTERVAL * 1e9)
    polls = polls_of(records, window)
    jitter_ms = [
        (first - tick * interval_ns) / 1e6
        for ticks in polls.values()
        for tick, first in ticks.items()
    ]
    # Per tick: when the first device's request left (the wake-up), and how long after it the
    # last device's left (the devices one after the other).
    by_tick: dict[int, list[int]] = defaultdict(list)
    for ticks in polls.values():
        for tick, first in ticks.items():
            by_tick[tick].append(first)
    earliest_ms = [(min(v) - tick * interval_ns) / 1e6 for tick, v in by_tick.items()]
    spread_ms = [(max(v) - min(v)) / 1e6 for v in by_tick.values()]
    return {
        "devices": len(polls),
        "records": len(records),
        "polls": len(jitter_ms),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "jitter_ms_p50": round(percentile(jitter_ms, 0.5), 2),
        "jitter_ms_p99": round(percentile(jitter_ms, 0.99), 2),
        "jitter_ms_max": round(max(jitter_ms), 2),
        "first_device_ms_p50": round(percentile(earliest_ms, 0.5), 2),
        "first_device_ms_p99": round(percentile(earliest_ms, 0.99), 2),
        "spread_ms_p50": round(percentile(spread_ms, 0.5), 2),
        "spread_ms_p99": round(percentile(spread_ms, 0.99), 2),
        "missed_polls": sum(missed(t, window) for t in polls.values()),
    }


def rtu_report(records: list[tuple[int, int, int]], window: tuple[float, float]) -> dict[str, Any]:
    polls = polls_of(records, window)
    periods = []
    for mid, ticks in polls.items():
        if mid == DEAD_UNIT:
            continue
        firsts = [ticks[t] for t in sorted(ticks)]
        periods += [(b - a) / 1e6 for a, b in itertools.pairwise(firsts)]
    return {
        "healthy_devices": len([m for m in polls if m != DEAD_UNIT]),
        "dead_device_records": len(polls.get(DEAD_UNIT, {})),
        "period_ms_p50": round(percentile(periods, 0.5), 1),
        "period_ms_p99": round(percentile(periods, 0.99), 1),
        "period_ms_max": round(max(periods), 1),
        "missed_polls": sum(missed(t, window) for m, t in polls.items() if m != DEAD_UNIT),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of the tcp part")
    parser.add_argument("--rtu-duration", type=float, default=60.0, help="seconds of the rtu part")
    parser.add_argument("--part", choices=["tcp", "rtu", "both"], default="both")
    parser.add_argument("--serve", nargs=2, metavar=("TCP_DEVICES", "PTY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        count, pty = int(args.serve[0]), args.serve[1]
        asyncio.run(serve(count, None if pty == "-" else pty))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "plugins" / "modbus"))
    from modbus_harness import PtyPair  # type: ignore[import-not-found]

    from tstorage_server.testing import ServerProcess

    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "cores": os.cpu_count()}
    line = PtyPair() if args.part in ("rtu", "both") else None
    tcp_count = TCP_DEVICES if args.part in ("tcp", "both") else 0
    simulators = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(tcp_count), line.device_side if line else "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert simulators.stdout is not None
        ports = json.loads(simulators.stdout.readline())["ports"]
        with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
            if tcp_count:
                config = Path(tmp) / "tcp.toml"
                config.write_text(daemon_config(server.port, Path(tmp) / "s1", tcp_source(ports)))
                cpu, wall, window = asyncio.run(run_daemon(config, args.duration))
                results["tcp"] = tcp_report(read_back(server.port, 1), cpu, wall, window)
            if line is not None:
                config = Path(tmp) / "rtu.toml"
                state = Path(tmp) / "s2"
                config.write_text(daemon_config(server.port, state, rtu_source(line.master_side)))
                _, _, window = asyncio.run(run_daemon(config, args.rtu_duration))
                results["rtu"] = rtu_report(read_back(server.port, 2), window)
    finally:
        if simulators.stdin is not None:
            simulators.stdin.close()
        simulators.wait(10)
        if line is not None:
            line.close()
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
