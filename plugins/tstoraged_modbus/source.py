"""The ``modbus`` source: poll groups on the clock, readings through the core's mapping.

Every (device, poll group) pair runs on its own :class:`tstoraged.scheduling.IntervalSchedule`,
so groups never wait for each other's ticks; requests meet only on a shared link, where they
take turns. A poll that cannot start on time is skipped and counted by the schedule, never
queued. Each poll's rows are mapped together (``context.map_many``) and emitted as one batch,
so one device's silence never holds back or discards another device's readings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from tstoraged.scheduling import IntervalSchedule
from tstoraged.source import Source
from tstoraged_modbus.config import ModbusConfig, resolve
from tstoraged_modbus.device import Device, DeviceMetrics, GroupState, Row
from tstoraged_modbus.gate import SendGate
from tstoraged_modbus.link import Link, quiet_pymodbus

__all__ = ["GroupPoller", "ModbusSource"]

DETAILS_INTERVAL = 1.0
"""Seconds between refreshes of the published details while polls run."""

LEAD_MAX = 0.1
"""Polls are woken this long before their tick (at most a tenth of the interval) to build
their first request; the send gate writes it at the tick."""


class GroupPoller:
    """One poll group of one device, on its own clock-aligned schedule."""

    def __init__(self, device: Device, group: GroupState) -> None:
        self.device = device
        self.group = group
        settings = group.settings
        self.schedule = IntervalSchedule(
            settings.interval,
            offset=settings.offset,
            max_lateness=settings.max_lateness,
            lead=min(LEAD_MAX, settings.interval / 10),
        )

    async def run(self, source: ModbusSource) -> None:
        """Poll on every tick until cancelled."""
        device, group = self.device, self.group
        assert group.counters is not None
        polls, skipped, deferred, lag = group.counters
        loop = asyncio.get_running_loop()
        async for tick in self.schedule:
            if tick.skipped:
                group.skipped += tick.skipped
                skipped.inc(tick.skipped)
            if not device.may_poll(loop.time()):
                group.deferred += 1
                deferred.inc()
                continue
            rows = await device.poll(group, tick)
            group.polls += 1
            polls.inc()
            if group.last_lag is not None:
                lag.set(group.last_lag)
            if rows:
                await source.emit_rows(device.name, rows)


class ModbusSource(Source):
    """Polls Modbus devices (TCP, RTU over serial, RTU over TCP) on clock-aligned schedules."""

    config: ModbusConfig

    def __init__(self, config: ModbusConfig, context: Any) -> None:
        super().__init__(config, context)
        self.links: dict[str, Link] = {}
        self.devices: list[Device] = []
        self.pollers: list[GroupPoller] = []
        self._changed = asyncio.Event()
        self._problem: str | None = None
        self.gate = SendGate()
        """Writes the requests due at one tick together, at the tick."""
        self._build()  # no I/O: devices and schedules are inspectable before run()

    def _build(self) -> None:
        resolved = resolve(self.config)
        metrics = DeviceMetrics(self.context.metrics)
        for device in resolved:
            link = self.links.get(device.connection_name)
            if link is None:
                link = self.links[device.connection_name] = Link(
                    device.connection_name,
                    device.connection,
                    on_change=self._changed.set,
                    gate=self.gate,
                )
            # A gateway that needs quiet after a connect needs it whichever device connects.
            link.pause_after_connect = max(
                link.pause_after_connect, device.config.pause_after_connect
            )
            runtime = Device(
                device,
                link,
                capture_time=self.config.capture_time,
                metrics=metrics,
                log=self.context.log,
                on_change=self._changed.set,
                rank=sum(d.link is link for d in self.devices),
            )
            link.shared = any(d.link is link for d in self.devices)
            self.devices.append(runtime)
            self.pollers += [GroupPoller(runtime, group) for group in runtime.groups.values()]

    async def run(self) -> None:
        quiet_pymodbus()
        self.context.log.info(
            "modbus_polling",
            devices=len(self.devices),
            connections=len(self.links),
            groups=len(self.pollers),
        )
        self._publish()
        try:
            async with asyncio.TaskGroup() as tasks:
                for poller in self.pollers:
                    tasks.create_task(
                        poller.run(self), name=f"{self.context.name}:{poller.device.name}"
                    )
                tasks.create_task(self._report(), name=f"{self.context.name}:status")
        finally:
            for link in self.links.values():
                with contextlib.suppress(Exception):
                    link.close()

    async def emit_rows(self, device: str, rows: Sequence[Row]) -> None:
        """Map one poll's rows and hand the records to the pipeline."""

        def origin(index: int) -> str:
            return f"{device}/{rows[index]['point']}"

        records = self.context.map_many(rows, origin_of=origin)
        if records:
            await self.context.emit(records)

    # -- reporting -----------------------------------------------------------------------------

    async def _report(self) -> None:
        """Publish details and the problem on changes, and refresh them every second."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), DETAILS_INTERVAL)
            self._changed.clear()
            self._publish()
            await asyncio.sleep(0.1)  # coalesce bursts of changes

    def _publish(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        details: dict[str, Any] = {}
        for name, link in self.links.items():
            members = [d for d in self.devices if d.link is link]
            entry: dict[str, Any] = {
                "state": link.state,
                "link": link.description,
                "devices": len(members),
            }
            if link.error:
                entry["error"] = link.error
            details[f"connection {name}"] = entry
        for device in self.devices:
            details[f"device {device.name}"] = device.details(now)
        self.context.set_details(details)
        problem = self._current_problem()
        if problem != self._problem:
            self._problem = problem
            self.context.set_problem(problem)

    def _current_problem(self) -> str | None:
        """A connection that is down, or whose every device is silent, is a problem."""
        problems = []
        for name, link in self.links.items():
            members = [d for d in self.devices if d.link is link]
            if link.state == "down":
                problems.append(f"connection {name}: {link.error}")
            elif members and all(d.state == "not_answering" for d in members):
                names = ", ".join(d.name for d in members)
                problems.append(
                    f"connection {name} ({link.description}): no device answers ({names})"
                )
        return "; ".join(problems) or None
