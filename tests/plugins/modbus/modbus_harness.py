"""Real Modbus peers for the modbus source's tests: pymodbus servers and a socat pty pair.

``Unit`` is one simulated device (a pymodbus ``SimDevice``) whose behaviour a test can change
while it runs: answer normally, stay silent (the request is never answered, like a device
unplugged from the bus), answer "busy" a few times, or answer an exception code. Every
request it sees is recorded with its arrival time.

Register images are built here by an encoder written independently of the plugin's
decoder: a value's big-endian bytes are shuffled into the device's byte order by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
STRUCT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}
SAMPLES: dict[str, Any] = {
    "int16": -12345,
    "uint16": 54321,
    "int32": -123456789,
    "uint32": 3123456789,
    "int64": -1234567890123456789,
    "uint64": 12345678901234567890,
    "float32": struct.unpack(">f", struct.pack(">f", 123.456))[0],  # exactly representable
    "float64": -98765.4321,
    "string": "TS-Mod01",
}
"""One value of every data type (the float32 one is what a float32 can hold)."""


def shuffle(data: bytes, order: str) -> bytes:
    """Big-endian value bytes as a device with ``order`` sends them."""
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [word[::-1] for word in words]
    return b"".join(words)


def registers_of(data_type: str, order: str, value: Any) -> list[int]:
    """The registers a device with ``order`` holds ``value`` of ``data_type`` in."""
    raw = value.encode() if data_type == "string" else struct.pack(STRUCT[data_type], value)
    sent = shuffle(raw, order)
    return [int.from_bytes(sent[i : i + 2], "big") for i in range(0, len(sent), 2)]


@dataclass
class Unit:
    """One simulated device behind a server (a unit id), with switchable behaviour."""

    unit_id: int
    holding: dict[int, list[int]] = field(default_factory=dict)
    """Blocks of holding registers: first address -> values. Other addresses are invalid."""
    input: dict[int, list[int]] = field(default_factory=dict)
    coils: dict[int, list[bool]] = field(default_factory=dict)
    discrete: dict[int, list[bool]] = field(default_factory=dict)
    silent: bool = False
    """Do not answer at all (like a device that is unplugged)."""
    busy_answers: int = 0
    """Answer this many next requests with "server device busy"."""
    exception: int | None = None
    """Answer every request with this exception code."""
    requests: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(monotonic arrival time, function code, address, count) of every request."""
    _release: asyncio.Event | None = None

    def sim_device(self) -> SimDevice:
        def bits(blocks: dict[int, list[bool]]) -> list[SimData]:
            return [
                SimData(a, values=list(v), datatype=DataType.BITS)
                for a, v in sorted(blocks.items())
            ] or [SimData(60000, values=[False], datatype=DataType.BITS)]

        def regs(blocks: dict[int, list[int]]) -> list[SimData]:
            return [
                SimData(a, values=list(v), datatype=DataType.REGISTERS)
                for a, v in sorted(blocks.items())
            ] or [SimData(60000, values=[0], datatype=DataType.REGISTERS)]

        return SimDevice(
            id=self.unit_id,
            simdata=(bits(self.coils), bits(self.discrete), regs(self.holding), regs(self.input)),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        _values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self.requests.append((time.monotonic(), function_code, address, count))
        if self.silent:
            if self._release is None:
                self._release = asyncio.Event()
            await self._release.wait()  # never answered while the test runs
            raise asyncio.CancelledError
        if self.busy_answers > 0:
            self.busy_answers -= 1
            return ExcCodes.DEVICE_BUSY
        if self.exception is not None:
            return ExcCodes(self.exception)
        return None

    def release(self) -> None:
        """Let hanging (silent) request handlers finish, so that the server can stop."""
        if self._release is not None:
            self._release.set()


@dataclass
class Running:
    """A started server: where it listens and its units."""

    server: ModbusTcpServer | ModbusSerialServer
    units: dict[int, Unit]
    port: int = 0


SHUTDOWN_S = 20.0


async def _shutdown(server: ModbusTcpServer | ModbusSerialServer) -> None:
    """Stop a simulator; one that does not stop is reported with where every task waits."""
    try:
        await asyncio.wait_for(server.shutdown(), SHUTDOWN_S)
    except TimeoutError:
        raise AssertionError(
            f"the pymodbus simulator did not shut down within {SHUTDOWN_S:g} s:\n" + task_stacks()
        ) from None


def task_stacks() -> str:
    """Where each task of the running loop is waiting (for a hang's failure message)."""
    out = io.StringIO()
    for each in asyncio.all_tasks():
        each.print_stack(file=out)
    return out.getvalue()


@contextlib.asynccontextmanager
async def tcp_server(
    *units: Unit, framer: FramerType = FramerType.SOCKET
) -> AsyncIterator[Running]:
    """A pymodbus TCP server on 127.0.0.1, a free port, in the running event loop."""
    server = ModbusTcpServer(
        [unit.sim_device() for unit in units], address=("127.0.0.1", 0), framer=framer
    )
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield Running(server, {unit.unit_id: unit for unit in units}, port)
    finally:
        for unit in units:
            unit.release()
        await _shutdown(server)


@contextlib.asynccontextmanager
async def serial_server(port: str, *units: Unit, baudrate: int = 19200) -> AsyncIterator[Running]:
    """A pymodbus RTU server on one end of a pty pair, in the running event loop."""
    server = ModbusSerialServer(
        [unit.sim_device() for unit in units],
        port=port,
        framer=FramerType.RTU,
        baudrate=baudrate,
        parity="N",  # a pty refuses parity settings (EINVAL); real lines use E by default
        reconnect_delay=0,
    )
    await server.serve_forever(background=True)
    try:
        yield Running(server, {unit.unit_id: unit for unit in units})
    finally:
        for unit in units:
            unit.release()
        await _shutdown(server)


class PtyPair:
    """Two connected pseudo terminals made by ``socat`` (a null-modem cable)."""

    def __init__(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (.ci/run installs it)")
        self.process = subprocess.Popen(
            [socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        paths: list[str] = []
        deadline = time.monotonic() + 10
        while len(paths) < 2:
            line = self.process.stderr.readline()
            if not line or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("socat did not report two ptys")
            match = re.search(r"PTY is (\S+)", line)
            if match:
                paths.append(match.group(1))
        self.device_side, self.master_side = paths
        # Keep draining socat's diagnostics so that it never blocks on a full pipe.
        self._drain = threading.Thread(target=self._discard, daemon=True)
        self._drain.start()

    def _discard(self) -> None:
        assert self.process.stderr is not None
        for _ in self.process.stderr:
            pass

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextlib.contextmanager
def pty_pair() -> Iterator[PtyPair]:
    """A socat pty pair for the duration of a test."""
    pair = PtyPair()
    try:
        yield pair
    finally:
        pair.close()


@dataclass(frozen=True)
class MapCase:
    """A register image holding every data type in every order, and the points reading it."""

    holding: dict[int, list[int]]
    points: list[dict[str, Any]]
    expected: dict[int, Any]
    """moid -> the exact value its record must carry."""


def every_type_case(start: int = 0, first_moid: int = 1) -> MapCase:
    """Every numeric type and a string, each in all four orders, back to back from ``start``."""
    registers: list[int] = []
    points: list[dict[str, Any]] = []
    expected: dict[int, Any] = {}
    moid = first_moid
    for data_type, value in SAMPLES.items():
        for order in ORDERS:
            point: dict[str, Any] = {
                "name": f"{data_type}_{order}",
                "address": start + len(registers),
                "type": data_type,
                "order": order,
                "moid": moid,
            }
            words = registers_of(data_type, order, value)
            if data_type == "string":
                point["length"] = len(words)
            elif data_type not in ("float32", "float64"):
                point["encoding"] = "integer"  # exact: int64 payloads, no float rounding
            registers += words
            points.append(point)
            expected[moid] = value
            moid += 1
    return MapCase({start: registers}, points, expected)
