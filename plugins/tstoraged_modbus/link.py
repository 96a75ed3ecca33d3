"""One Modbus connection (a TCP socket or a serial line) that its devices take turns on.

A :class:`Link` owns one pymodbus asyncio client. Requests of all devices on it are
serialized by one lock (FIFO, so no device starves), each with its own device's unit id,
timeout and pause, and with the RTU inter-frame silence on serial lines. The link, not
pymodbus, decides about the connection: pymodbus' automatic reconnect and its "close after
N unanswered requests" are switched off, because on a shared gateway one silent unit id must
not take the connection away from the others. A failed connect is retried with a capped
exponential backoff; while it waits, requests fail at once with :class:`ConnectionDown`
instead of holding the bus.

A request may be due at an instant (``at``, the poll's tick): with a :class:`SendGate`, the
link builds it ahead of time and the gate writes the frame at the instant, together with the
other connections' requests due then; on a shared connection the devices wait for the instant
and then take turns in rank order. ``Response.sent_ns`` is when the frame was written.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tstoraged_modbus.config import SerialConnection, TcpConnection
from tstoraged_modbus.datatypes import Table
from tstoraged_modbus.gate import Held, SendGate

if TYPE_CHECKING:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.pdu import ModbusPDU

__all__ = [
    "EXCEPTION_NAMES",
    "ConnectionDown",
    "ExceptionResponse",
    "IncompleteFrame",
    "Link",
    "ModbusFailure",
    "NoResponse",
    "RequestTarget",
    "Response",
    "quiet_pymodbus",
]

EXCEPTION_NAMES: Final[dict[int, str]] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x07: "negative acknowledge",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}
"""Modbus exception codes and their names in the Modbus application protocol."""

_READ_FUNCTIONS: Final[dict[str, str]] = {
    "coil": "read_coils",
    "discrete_input": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}
_NO_PYMODBUS_TIMEOUT: Final = 3600.0
"""pymodbus' own response timer is set far out: the link times requests itself."""


class ModbusFailure(Exception):
    """A request that did not give values. ``kind`` is a short label for metrics."""

    kind = "failure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoResponse(ModbusFailure):
    """The device did not answer within its timeout."""

    kind = "timeout"


class IncompleteFrame(NoResponse):
    """A response started but stalled longer than the line's byte timeout."""

    kind = "incomplete_frame"


class BadResponse(ModbusFailure):
    """A response that does not fit the request (wrong count, undecodable)."""

    kind = "bad_response"


class ConnectionDown(ModbusFailure):
    """The connection is not up (connect failed, waiting to retry, or lost)."""

    kind = "connection"


class ExceptionResponse(ModbusFailure):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"exception 0x{code:02X} ({self.name})")
        self.kind = self.name.replace(" ", "_")

    @property
    def refuses_addresses(self) -> bool:
        """The device refuses what was asked (address or count): splitting may help."""
        return self.code in (0x02, 0x03)

    @property
    def busy(self) -> bool:
        """Busy or acknowledge: the request may be repeated after a wait."""
        return self.code in (0x05, 0x06)

    @property
    def no_response(self) -> bool:
        """A gateway reports that the device behind it did not answer."""
        return self.code in (0x0A, 0x0B)


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """What a request needs to know about its device."""

    unit: int
    timeout: float
    pause: float = 0.0
    """Silence on the connection before the request."""
    low_priority: bool = False
    """Wait until no other request waits (a silent device's probe goes last)."""
    rank: int = 0
    """The device's place on its connection: waiting requests go in this order, so that
    every device keeps its slot in the round and its poll period stays steady."""


@dataclass(frozen=True, slots=True)
class Response:
    """The values of one read and when it happened (Unix ns)."""

    values: Sequence[int] | Sequence[bool]
    sent_ns: int
    received_ns: int


def quiet_pymodbus() -> None:
    """Keep pymodbus' own log lines out: the source reports every failure itself, once."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class Link:
    """One connection and the lock its devices' requests take turns on."""

    def __init__(
        self,
        name: str,
        settings: TcpConnection | SerialConnection,
        *,
        pause_after_connect: float = 0.0,
        on_change: Callable[[], None] = lambda: None,
        gate: SendGate | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.pause_after_connect = pause_after_connect
        self.shared = False
        """More than one device uses this connection."""
        self._on_change = on_change
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._turns = _Turns()
        self._failures = 0
        self._retry_at = 0.0
        self._last_end = 0.0
        self._rx_at = 0.0
        self._lost = False
        self._pending: asyncio.Future[ModbusPDU] | None = None
        self._connect_error: BaseException | None = None
        self._gate = gate
        self._due: tuple[float, float | None] | None = None
        """(instant, spin) the next frame is held for in the gate."""
        self._held: Held | None = None
        self._sent_ns = 0
        serial = settings if isinstance(settings, SerialConnection) else None
        self._frame_gap = serial.frame_gap if serial else 0.0
        self._byte_timeout = serial.byte_timeout if serial else None
        self.state = "idle"
        """idle (never connected), connected, closed (by close_after_poll) or down."""
        self.error: str | None = None
        """Why the connection is down, while it is."""
        self.connects = 0
        """Successful connects so far."""

    @property
    def description(self) -> str:
        """``tcp 10.0.0.5:502`` / ``serial /dev/ttyUSB0 19200 8E1``, for messages."""
        s = self.settings
        if isinstance(s, SerialConnection):
            return f"serial {s.port} {s.baudrate} {s.bytesize}{s.parity}{s.stopbits}"
        return f"{s.transport} {s.host}:{s.port}"

    @property
    def busy(self) -> bool:
        """A request is running or waiting."""
        return self._turns.busy

    async def read(
        self,
        target: RequestTarget,
        table: Table,
        address: int,
        count: int,
        *,
        at: float | None = None,
        spin: float | None = None,
    ) -> Response:
        """Read ``count`` registers or bits of ``table`` from ``address`` (protocol address).

        ``at`` (Unix seconds): the request is due then, not earlier (the poll's tick); with a
        gate it is written at that instant (``spin``: see :class:`SendGate`).

        Raises :class:`NoResponse`, :class:`ConnectionDown`, :class:`ExceptionResponse` or
        :class:`BadResponse`.
        """
        loop = asyncio.get_running_loop()
        gate = self._gate
        if gate is None:
            at = None
        waited = False
        if gate is not None and at is not None and self.shared:
            # All devices of the connection wait for the instant, then go in rank order
            # (a silent device's probe last): each keeps its place in the round.
            waited = await gate.wait(at, (1 if target.low_priority else 0, target.rank))
            at = None
        if not waited and (self.shared or target.low_priority):
            # Late for the instant (or none): let the requests of the devices polled at the
            # same tick queue up, so that they go in rank order (a silent device's probe last).
            await asyncio.sleep(0)
        await self._turns.acquire((1 if target.low_priority else 0, target.rank))
        try:
            client = await self._connected(loop)
            wait = self._last_end + max(self._frame_gap, target.pause) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            call = getattr(client, _READ_FUNCTIONS[table])
            timeout = target.timeout
            if at is not None:
                self._due = (at, spin)
                timeout += max(0.0, at - time.time())  # counted from the write
            self._sent_ns = 0
            try:
                pdu = await self._exchange(
                    loop, call(address, count=count, device_id=target.unit), timeout
                )
            finally:
                self._due = None
                if self._held is not None:  # gave up before its instant: never written
                    self._held.cancel()
                    self._held = None
                self._last_end = loop.time()
            received_ns = time.time_ns()
            sent_ns = self._sent_ns or received_ns
        finally:
            self._turns.release()
        if pdu.isError():
            raise ExceptionResponse(pdu.exception_code)
        if table in ("holding", "input"):
            values: Sequence[int] | Sequence[bool] = pdu.registers
            if len(values) != count:
                raise BadResponse(f"asked for {count} registers, got {len(values)}")
        else:
            if len(pdu.bits) < count:
                raise BadResponse(f"asked for {count} bits, got {len(pdu.bits)}")
            values = pdu.bits[:count]
        return Response(values, sent_ns, received_ns)

    def close(self) -> None:
        """Close the connection (the next request connects again)."""
        if self._client is not None and self._client.connected:
            self._client.close()
            self.state = "closed"
            self._on_change()

    def close_if_idle(self) -> None:
        """Close unless other requests are waiting (``close_after_poll``)."""
        if not self.busy:
            self.close()

    # -- connection ----------------------------------------------------------------------------

    async def _connected(
        self, loop: asyncio.AbstractEventLoop
    ) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        client = self._client
        if client is not None and client.connected and not self._lost:
            return client
        if loop.time() < self._retry_at:
            raise ConnectionDown(self.error or "connection down")
        if client is None:
            client = self._client = self._make_client()
        elif client.connected:
            client.close()  # lost while a request ran: start over
        self._lost = False
        client.ctx.comm_params.timeout_connect = self.settings.connect_timeout
        self._connect_error = None
        connected = await client.connect() and client.connected
        client.ctx.comm_params.timeout_connect = _NO_PYMODBUS_TIMEOUT
        if not connected:
            self._failures += 1
            delay = min(
                self.settings.reconnect_delay * 2 ** min(self._failures - 1, 30),
                self.settings.reconnect_delay_max,
            )
            self._retry_at = loop.time() + delay
            self.state = "down"
            self.error = f"cannot connect to {self.description}: {self._reason()}"
            self._on_change()
            raise ConnectionDown(self.error)
        self._failures = 0
        self.connects += 1
        self.state = "connected"
        self.error = None
        self._last_end = loop.time()
        self._on_change()
        if self.pause_after_connect > 0:
            await asyncio.sleep(self.pause_after_connect)
        return client

    def _reason(self) -> str:
        error = self._connect_error
        if error is None or isinstance(error, asyncio.CancelledError | TimeoutError):
            return f"no answer within {self.settings.connect_timeout:g} s"
        text = getattr(error, "strerror", None) or str(error) or type(error).__name__
        return str(text)

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
        from pymodbus.framer import FramerType

        common: dict[str, Any] = {
            "name": self.name,
            "reconnect_delay": 0,  # no automatic reconnect: the link decides
            "reconnect_delay_max": 0,
            "timeout": self.settings.connect_timeout,
            "retries": 0,  # the device decides about repeats
            "trace_packet": self._traced,
            "trace_connect": self._connection_event,
        }
        s = self.settings
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if isinstance(s, SerialConnection):
            client = AsyncModbusSerialClient(
                s.port,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                bytesize=s.bytesize,
                parity=s.parity,
                stopbits=s.stopbits,
                **common,
            )
        else:
            framer = FramerType.SOCKET if s.transport == "tcp" else FramerType.RTU
            client = AsyncModbusTcpClient(s.host, port=s.port, framer=framer, **common)
        # One silent unit id must not make pymodbus drop a connection others use.
        client.set_max_no_responses(2**31)
        # Frames go through the link: it notes when each is written, and a frame due at an
        # instant waits in the gate for it.
        client.ctx.low_level_send = functools.partial(self._send, client.ctx.send)
        original = client.ctx.call_create

        async def create() -> Any:
            try:
                return await original()
            except BaseException as error:  # kept for the message, re-raised
                self._connect_error = error
                raise

        client.ctx.call_create = create
        return client

    # -- one request ---------------------------------------------------------------------------

    def _send(
        self,
        write: Callable[[bytes, tuple[Any, ...] | None], None],
        data: bytes,
        addr: tuple[Any, ...] | None = None,
    ) -> None:
        """pymodbus' low-level send: held in the gate while the request's instant is ahead."""
        due, self._due = self._due, None
        if due is not None and self._gate is not None:
            held = self._gate.hold(
                due[0], functools.partial(self._write, write, data, addr), spin=due[1]
            )
            if held is not None:
                self._held = held
                return
        self._write(write, data, addr)

    def _write(
        self,
        write: Callable[[bytes, tuple[Any, ...] | None], None],
        data: bytes,
        addr: tuple[Any, ...] | None,
    ) -> None:
        self._held = None
        self._sent_ns = time.time_ns()
        write(data, addr)

    def _traced(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx_at = asyncio.get_running_loop().time()
        return data

    def _connection_event(self, connected: bool) -> None:
        if not connected:
            self._lost = True
            if self._pending is not None and not self._pending.done():
                self._pending.cancel()

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        request: Any,
        timeout: float,  # noqa: ASYNC109
    ) -> ModbusPDU:
        byte_timeout = self._byte_timeout
        if byte_timeout is None:
            # The common case, in this task: no extra task, the frame is written right away.
            try:
                async with asyncio.timeout(timeout):
                    return await self._checked(request)
            except TimeoutError:
                if self._lost:
                    raise ConnectionDown(f"connection to {self.description} lost") from None
                raise NoResponse(f"no response within {timeout:g} s") from None
        started = loop.time()
        deadline = started + timeout
        task: asyncio.Future[ModbusPDU] = asyncio.ensure_future(request)
        self._pending = task
        try:
            while True:
                wake = deadline
                if byte_timeout is not None:
                    # Look again every byte_timeout: bytes may start arriving at any moment.
                    last = self._rx_at if self._rx_at > started else loop.time()
                    wake = min(wake, last + byte_timeout)
                done, _ = await asyncio.wait((task,), timeout=max(0.0, wake - loop.time()))
                if done:
                    return self._result(task)
                now = loop.time()
                if now >= deadline:
                    raise NoResponse(f"no response within {timeout:g} s")
                if (
                    byte_timeout is not None
                    and self._rx_at > started
                    and now - self._rx_at >= byte_timeout
                ):
                    raise IncompleteFrame(
                        f"response stalled for more than byte_timeout = {byte_timeout:g} s"
                    )
        finally:
            self._pending = None
            if not task.done():
                task.cancel()

    def _result(self, task: asyncio.Future[ModbusPDU]) -> ModbusPDU:
        if task.cancelled():
            raise ConnectionDown(f"connection to {self.description} lost")
        try:
            return task.result()
        except Exception as exc:
            raise self._failure(exc) from None

    async def _checked(self, request: Any) -> ModbusPDU:
        """Await pymodbus' request; its exceptions become ours."""
        try:
            pdu: ModbusPDU = await request
        except Exception as exc:
            raise self._failure(exc) from None
        return pdu

    def _failure(self, exc: Exception) -> Exception:
        from pymodbus.exceptions import ConnectionException, ModbusException

        if isinstance(exc, ConnectionException):
            self._lost = True
            return ConnectionDown(f"connection to {self.description} lost: {exc}")
        if isinstance(exc, ModbusException):
            return BadResponse(str(exc))
        return exc


class _Turns:
    """A lock whose waiters go by priority, then rank, then arrival.

    A silent device's probe (priority 1) waits behind the others; among the rest, a device
    ranked before another goes first, so each keeps its slot in the round.
    """

    def __init__(self) -> None:
        self._held = False
        self._queue: list[tuple[tuple[int, int], int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def busy(self) -> bool:
        """Held, or wanted."""
        return self._held or bool(self._queue)

    async def acquire(self, priority: tuple[int, int]) -> None:
        """Wait for the turn (lower ``priority`` first, then first come)."""
        if not self._held and not self._queue:
            self._held = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # the turn was handed over just as the waiter was cancelled
            else:
                self._queue = [entry for entry in self._queue if entry[2] is not turn]
                heapq.heapify(self._queue)
            raise

    def release(self) -> None:
        """Hand the turn to the next waiter, or free it."""
        while self._queue:
            _, _, turn = heapq.heappop(self._queue)
            if not turn.done():
                turn.set_result(None)  # stays held: the waiter has it now
                return
        self._held = False
