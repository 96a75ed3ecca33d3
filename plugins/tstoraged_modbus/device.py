"""One device at run time: its polls, what it taught the read plans, its health.

A poll sends the group's planned reads one after the other on the device's link; each read
is repeated after a timeout (``retries``) or a busy answer (``busy_retries`` after
``busy_wait``). What a read brings is decoded into one row of named fields per point; what
fails is handled so that nothing else is lost:

- a refused read of several points (illegal data address or value) is split and both halves
  are read at once; a point refused on its own is left out for ``refused_point_retry``;
- a point that fails is logged once, counted every time, and logged again when it recovers;
- a device that does not answer ends its poll at once (its other reads would only wait for
  the same silence) and is backed off: polled after 1, 2, 4 ... intervals, at most
  ``backoff_max`` apart, so a dead device on a shared bus costs that bus little.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tstoraged_modbus.config import CaptureTime, PollGroup, ResolvedDevice, ResolvedPoint
from tstoraged_modbus.datatypes import BIT_TABLES, RegisterBuffers, ValueDecoder
from tstoraged_modbus.gate import SPIN
from tstoraged_modbus.link import (
    BadResponse,
    ConnectionDown,
    ExceptionResponse,
    Link,
    ModbusFailure,
    NoResponse,
    RequestTarget,
    Response,
)
from tstoraged_modbus.plan import PlannedPoint, Read, ReadPlan

if TYPE_CHECKING:
    import structlog

    from tstoraged.observe.source_metrics import CounterValue, GaugeValue, SourceMetrics
    from tstoraged.scheduling import Tick

__all__ = ["Device", "DeviceMetrics", "GroupState", "PointFailure", "Row"]

Row = dict[str, Any]
"""The named fields of one point's reading, for the source's mapping."""


@dataclass
class PointFailure:
    """A point that keeps failing: reported once, counted every poll."""

    error: str
    count: int = 1
    since: float = field(default_factory=time.time)


class DeviceMetrics:
    """The source's own metric families, bound once (``tstoraged_modbus_*``)."""

    def __init__(self, metrics: SourceMetrics) -> None:
        self.requests = metrics.counter("modbus_requests", "Modbus read requests sent.", ["device"])
        self.request_errors = metrics.counter(
            "modbus_request_errors",
            "Modbus read requests that gave no values, by error.",
            ["device", "error"],
        )
        self.point_errors = metrics.counter(
            "modbus_point_errors",
            "Point readings lost, by device, point and error (exception responses name both).",
            ["device", "point", "error"],
        )
        self.polls = metrics.counter("modbus_polls", "Polls run.", ["device", "group"])
        self.skipped = metrics.counter(
            "modbus_polls_skipped",
            "Polls skipped because they could not start on time (not queued).",
            ["device", "group"],
        )
        self.deferred = metrics.counter(
            "modbus_polls_deferred",
            "Polls left out while a silent device is backed off.",
            ["device", "group"],
        )
        self.lag = metrics.gauge(
            "modbus_poll_lag_seconds",
            "Time from the scheduled instant to the poll's first request, last poll.",
            ["device", "group"],
        )
        self.up = metrics.gauge(
            "modbus_device_up", "1 while the device answers, 0 when it does not.", ["device"]
        )


@dataclass
class GroupState:
    """One poll group of one device: its plan and its counters."""

    name: str
    settings: PollGroup
    plan: ReadPlan[ResolvedPoint]
    polls: int = 0
    skipped: int = 0
    deferred: int = 0
    retry_refused_at: float = 0.0
    """Monotonic time at which refused points are tried again."""
    last_lag: float | None = None
    counters: tuple[CounterValue, CounterValue, CounterValue, GaugeValue] | None = None


class Device:
    """A device's polls on its link, and its state as operators see it."""

    def __init__(
        self,
        resolved: ResolvedDevice,
        link: Link,
        *,
        capture_time: CaptureTime,
        metrics: DeviceMetrics,
        log: structlog.typing.FilteringBoundLogger,
        on_change: Callable[[], None] = lambda: None,
        rank: int = 0,
    ) -> None:
        config = resolved.config
        self.name = config.name
        self.config = config
        self.resolved = resolved
        self.link = link
        self.capture_time = capture_time
        self.log = log.bind(device=self.name)
        self._on_change = on_change
        self.target = RequestTarget(
            config.unit, config.timeout, config.pause_between_requests, rank=rank
        )
        self._probe_target = replace(self.target, low_priority=True)
        self.groups: dict[str, GroupState] = {}
        for name in sorted({point.group for point in resolved.points}):
            members = tuple(
                PlannedPoint(p.table, p.address, p.width, p)
                for p in resolved.points
                if p.group == name
            )
            plan = ReadPlan(members, config.max_gap, config.max_registers, config.max_bits)
            self.groups[name] = GroupState(name, resolved.groups[name], plan)
        self._base_interval = min(group.settings.interval for group in self.groups.values())
        self._decoders = {p.name: _decoder_of(p) for p in resolved.points}
        self._fields = {p.name: _fixed_fields(p, config.unit) for p in resolved.points}
        self.state = "starting"
        """starting, up, not_answering or connection_down."""
        self.error: str | None = None
        self.failed_polls = 0
        """Polls in a row without any answer."""
        self.last_success: float | None = None
        self.next_attempt = 0.0
        """Monotonic time before which a silent device is not polled."""
        self.failing: dict[str, PointFailure] = {}
        self.metrics = metrics
        self._requests = metrics.requests.labels(device=self.name)
        self._up = metrics.up.labels(device=self.name)
        for group in self.groups.values():
            labels = {"device": self.name, "group": group.name}
            group.counters = (
                metrics.polls.labels(**labels),
                metrics.skipped.labels(**labels),
                metrics.deferred.labels(**labels),
                metrics.lag.labels(**labels),
            )

    # -- scheduling ----------------------------------------------------------------------------

    def may_poll(self, now: float) -> bool:
        """False while a silent device is backed off (the poll is deferred)."""
        # Half an interval of slack: the next attempt is due at a tick, not just after it.
        return now >= self.next_attempt - self._base_interval / 2

    # -- one poll ------------------------------------------------------------------------------

    async def poll(self, group: GroupState, tick: Tick) -> list[Row]:
        """Read the group's points once; the rows of every point that gave a value."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        plan = group.plan
        if plan.refused and started >= group.retry_refused_at:
            plan.retry_refused()
        rows: list[Row] = []
        pending = list(plan.reads)
        answered = False
        silence: ModbusFailure | None = None
        down: ConnectionDown | None = None
        first = True
        # The first request is due at the tick itself (the poll is woken ahead of it), the
        # others follow the answers.
        at: float | None = tick.at
        spin = min(SPIN, group.settings.interval / 100)
        while pending:
            read = pending.pop(0)
            try:
                response = await self._request(read, at, spin)
            except ExceptionResponse as exc:
                if exc.no_response:
                    silence = exc
                    break
                answered = True
                pending[0:0] = self._refused(group, read, exc, started)
                continue
            except NoResponse as exc:
                silence = exc
                break
            except ConnectionDown as exc:
                down = exc
                break
            except BadResponse as exc:
                answered = True
                self._points_failed(read.points, exc)
                continue
            finally:
                at = None
            answered = True
            if first:
                first = False
                group.last_lag = response.sent_ns / 1e9 - tick.at
            self._decode(read, response, tick, rows)
        self._polled(answered, silence, down, started)
        if self.config.close_after_poll:
            self.link.close_if_idle()
        return rows

    async def _request(
        self, read: Read[ResolvedPoint], at: float | None = None, spin: float | None = None
    ) -> Response:
        """One read, repeated after silence (``retries``) and busy answers (``busy_retries``)."""
        config = self.config
        repeats = busy = 0
        errors = self.metrics.request_errors
        # A silent device's probe waits behind the requests of devices that answer.
        target = self._probe_target if self.state == "not_answering" else self.target
        while True:
            self._requests.inc()
            try:
                return await self.link.read(
                    target, read.table, read.address, read.count, at=at, spin=spin
                )
            except ExceptionResponse as exc:
                errors.labels(device=self.name, error=exc.kind).inc()
                if exc.busy and busy < config.busy_retries:
                    busy += 1
                    await asyncio.sleep(config.busy_wait)
                    continue
                if exc.no_response and repeats < config.retries:
                    repeats += 1
                    continue
                raise
            except NoResponse as exc:
                errors.labels(device=self.name, error=exc.kind).inc()
                if repeats < config.retries:
                    repeats += 1
                    continue
                raise
            except ModbusFailure as exc:
                errors.labels(device=self.name, error=exc.kind).inc()
                raise

    def _refused(
        self,
        group: GroupState,
        read: Read[ResolvedPoint],
        exc: ExceptionResponse,
        now: float,
    ) -> list[Read[ResolvedPoint]]:
        """Handle an exception answer; returns reads to send instead (the split halves)."""
        if exc.refuses_addresses and len(read.points) > 1:
            try:
                first, second = group.plan.split(read)
            except ValueError:
                pass  # overlapping points (bits of one register): refused together
            else:
                self.log.info(
                    "modbus_read_split",
                    table=read.table,
                    address=read.address,
                    count=read.count,
                    error=exc.message,
                    cut=second.address,
                )
                return [first, second]
        if exc.refuses_addresses or exc.code == 0x01:
            for point in read.points:
                group.plan.refuse(point)
            group.retry_refused_at = now + self.config.refused_point_retry
        self._points_failed(read.points, exc)
        return []

    def _decode(
        self, read: Read[ResolvedPoint], response: Response, tick: Tick, rows: list[Row]
    ) -> None:
        if self.capture_time == "request":
            ts = response.sent_ns
        elif self.capture_time == "response":
            ts = response.received_ns
        else:
            ts = tick.at_ns
        values = response.values
        registers = None if read.table in BIT_TABLES else RegisterBuffers(values)
        decoders = self._decoders
        fields = self._fields
        failing = self.failing
        for planned in read.points:
            point = planned.point
            offset = planned.address - read.address
            if registers is None:
                raw: Any = bool(values[offset])
            else:
                raw = decoders[point.name].decode(registers, offset)
            row = fields[point.name].copy()
            row["raw"] = raw
            row["value"] = _value(point, raw)
            row["ts"] = ts
            rows.append(row)
            if failing and point.name in failing:
                self._point_recovered(point)

    # -- health --------------------------------------------------------------------------------

    def _polled(
        self,
        answered: bool,
        silence: ModbusFailure | None,
        down: ConnectionDown | None,
        started: float,
    ) -> None:
        before = self.state
        if answered:
            if self.state in ("not_answering", "connection_down"):
                self.log.info(
                    "modbus_device_answering",
                    unit=self.config.unit,
                    after_failed_polls=self.failed_polls,
                )
            self.state, self.error, self.failed_polls = "up", None, 0
            self.next_attempt = 0.0
            self.last_success = time.time()
            self._up.set(1)
        elif silence is not None:
            self.failed_polls += 1
            delay = min(
                self._base_interval * 2 ** min(self.failed_polls - 1, 30),
                self.config.backoff_max,
            )
            self.next_attempt = started + delay
            self.error = silence.message
            if self.state != "not_answering":
                self.log.warning(
                    "modbus_device_not_answering",
                    unit=self.config.unit,
                    connection=self.link.name,
                    error=silence.message,
                )
            self.state = "not_answering"
            self._up.set(0)
        elif down is not None:
            self.failed_polls += 1
            self.state, self.error = "connection_down", down.message
            self._up.set(0)
        if self.state != before:
            self._on_change()

    def _points_failed(
        self, points: tuple[PlannedPoint[ResolvedPoint], ...], exc: ModbusFailure
    ) -> None:
        family = self.metrics.point_errors
        for planned in points:
            point = planned.point
            family.labels(device=self.name, point=point.name, error=exc.kind).inc()
            failure = self.failing.get(point.name)
            if failure is not None:
                failure.count += 1
                failure.error = exc.message
                continue
            self.failing[point.name] = PointFailure(exc.message)
            self.log.warning(
                "modbus_point_failed",
                point=point.name,
                address=point.where,
                unit=self.config.unit,
                error=exc.message,
            )
            self._on_change()

    def _point_recovered(self, point: ResolvedPoint) -> None:
        failure = self.failing.pop(point.name)
        self.log.info(
            "modbus_point_recovered",
            point=point.name,
            address=point.where,
            failed=failure.count,
            error=failure.error,
        )
        self._on_change()

    def details(self, now: float) -> dict[str, Any]:
        """The device as ``/status`` shows it (JSON-able, small)."""
        groups = self.groups.values()
        details: dict[str, Any] = {
            "state": self.state,
            "connection": self.link.name,
            "unit": self.config.unit,
            "polls": sum(g.polls for g in groups),
            "skipped": sum(g.skipped for g in groups),
            "deferred": sum(g.deferred for g in groups),
        }
        if self.last_success is not None:
            details["last_success"] = _iso(self.last_success)
        if self.state == "not_answering":
            details["failed_polls"] = self.failed_polls
            details["next_attempt_s"] = round(max(0.0, self.next_attempt - now), 1)
        if self.error:
            details["error"] = self.error
        if self.failing:
            name, failure = next(iter(self.failing.items()))
            details["failing_points"] = len(self.failing)
            details["first_failing"] = f"{name}: {failure.error} x{failure.count}"
        return details


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _decoder_of(point: ResolvedPoint) -> ValueDecoder:
    return ValueDecoder(point.data_type, point.order, bit=point.bit, length=point.length)


def _fixed_fields(point: ResolvedPoint, unit: int) -> Row:
    fields: Row = {"device": point.device, "point": point.name, "unit": unit, "group": point.group}
    for name in ("cid", "mid", "moid"):
        value = getattr(point, name)
        if value is not None:
            fields[name] = value
    return fields


def _value(point: ResolvedPoint, raw: Any) -> Any:
    """The payload value: scaled float64, the raw integer, or the text."""
    if point.data_type == "string":
        return raw
    if point.encoding == "integer":
        return int(raw)
    if point.scale == 1.0 and point.offset == 0.0:
        return float(raw)
    return float(raw) * point.scale + point.offset
