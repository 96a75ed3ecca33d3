"""Run the modbus source in the test's event loop with the core's RecordingContext."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from modbus_harness import task_stacks
from tstoraged_modbus import ModbusConfig, ModbusSource

from tstorage_client.record import Record
from tstorage_client.timestamp import OFFSET_NS
from tstoraged.plugins import PluginManager
from tstoraged.testing import RecordingContext

DEADLINE_S = 20.0


def codecs() -> Any:
    return PluginManager.from_entry_points({"TSTORAGED_LOAD_PLUGINS": "codecs,modbus"}).codecs


def tcp(port: int) -> dict[str, Any]:
    return {"transport": "tcp", "host": "127.0.0.1", "port": port}


def config(devices: list[dict[str, Any]], **source: Any) -> ModbusConfig:
    return ModbusConfig.model_validate(
        {"type": "modbus", "name": "plant", "cid": 1, **source, "devices": devices}
    )


@contextlib.asynccontextmanager
async def running(
    settings: ModbusConfig, tmp_path: Path
) -> AsyncIterator[tuple[ModbusSource, RecordingContext]]:
    """The source running (cancelled on exit, like the daemon stops it)."""
    context = RecordingContext(settings, tmp_path, codecs=codecs())
    source = ModbusSource(settings, context)
    task = asyncio.create_task(source.run())
    try:
        yield source, context
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        if not done:  # a stop that hangs is a bug: say where every task is
            raise AssertionError(
                f"the source did not stop within {DEADLINE_S:g} s of its cancellation:\n"
                + task_stacks()
            )
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], Any], what: str) -> Any:
    """Wait (bounded) until ``condition()`` is truthy, checking every 20 ms of loop time."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def poller(source: ModbusSource, device: str, group: str = "default") -> Any:
    return next(p for p in source.pollers if p.device.name == device and p.group.name == group)


def device(source: ModbusSource, name: str) -> Any:
    return next(d for d in source.devices if d.name == name)


def records_of(context: RecordingContext, mid: int) -> list[Record[bytes]]:
    return [record for record in context.records if record.key.mid == mid]


def tick_indexes(records: list[Record[bytes]], interval_ns: int) -> list[int]:
    """The schedule tick (k of k * interval) of each record (capture_time = "scheduled")."""
    return sorted({round((r.key.cap + OFFSET_NS) / interval_ns) for r in records})
