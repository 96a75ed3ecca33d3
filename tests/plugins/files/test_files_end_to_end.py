"""Files source -> the daemon's real pipeline -> the project's TStorage-compatible server."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_client.timestamp import OFFSET_NS
from tstorage_server.testing import RunningServer, serve_async
from tstoraged.config.loader import load_config
from tstoraged.plugins import PluginManager
from tstoraged.runtime.app import Daemon

ENV = {"TSTORAGED_LOAD_PLUGINS": "codecs,files"}
DEADLINE_S = 30.0
T0_MS = 1_700_000_000_000


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

[[sources]]
type = "files"
name = "plc"
format = "csv"
poll_interval = 0.02
checkpoint_interval = 0.02
key = {{ cid = 7, mid = "{{meter}}", moid = "{{channel}}" }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<if", fields = ["count", "temp"] }}
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


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll the daemon's visible effects (files moved, records stored) with a deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def holds(server: RunningServer, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(await stored(server)) >= count

    return check


def csv_rows(start: int, stop: int) -> str:
    return "".join(f"{T0_MS + i},{i % 10},{i % 4},{i},{i / 4}\n" for i in range(start, stop))


async def stored(server: RunningServer) -> list[Record[bytes]]:
    channel: AsyncChannel[bytes] = AsyncChannel(server.host, server.port, BytesPayloadType())
    async with channel:
        response = await channel.get(Key(7, -(2**63), -(2**31), -(2**63), -(2**63)), Key.max())
    assert response, response
    return list(response.data)


def decode(records: list[Record[bytes]]) -> list[tuple[int, int, int, int, float]]:
    """(ts ms, meter, channel, count, temp) of each stored record, sorted by ts."""
    rows = []
    for record in records:
        count, temp = struct.unpack("<if", record.value)
        ts_ms = (record.key.cap + OFFSET_NS) // 1_000_000
        rows.append((ts_ms, record.key.mid, record.key.moid, count, temp))
    return sorted(rows)


def expected(start: int, stop: int) -> list[tuple[int, int, int, int, float]]:
    return [(T0_MS + i, i % 10, i % 4, i, i / 4) for i in range(start, stop)]


async def test_a_dropped_file_arrives_in_tstorage_and_its_bad_lines_are_dead_lettered(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    async with serve_async() as server:
        config = daemon_config(
            tmp_path, server, f'mode = "drop"\ndirectory = "{drop}"\nsettle_time = 0'
        )
        async with running_daemon(config):
            tmp = drop / ".export.csv"
            tmp.write_text(
                "ts,meter,channel,count,temp\n"
                + csv_rows(0, 10_000)
                + "oops,1,1,1,1\n"  # line 10002: the mapping refuses the timestamp
                + csv_rows(10_000, 20_000)
            )
            tmp.rename(drop / "export.csv")
            await eventually((drop / "done" / "export.csv").exists, "file done")
        records = await stored(server)
    assert decode(records) == expected(0, 20_000)
    letters = [json.loads(line) for line in (tmp_path / "state" / "dead-letter.jsonl").open()]
    assert [letter["origin"] for letter in letters] == [f"{drop}/export.csv:10002"]


async def test_a_daemon_restart_in_the_middle_of_a_tailed_file_stores_every_line_once(
    tmp_path: Path,
) -> None:
    log = tmp_path / "plc.csv"
    log.write_text("ts,meter,channel,count,temp\n" + csv_rows(0, 5_000))
    async with serve_async() as server:
        config = daemon_config(tmp_path, server, f'mode = "tail"\npaths = ["{log}"]')
        async with running_daemon(config):
            await eventually(holds(server, 5_000), "first part")
            with log.open("a") as f:
                f.write(csv_rows(5_000, 8_000))
        # Stopped (gracefully) while lines keep coming; the restart continues after the
        # last acknowledged line.
        with log.open("a") as f:
            f.write(csv_rows(8_000, 12_000))
        async with running_daemon(config):
            await eventually(holds(server, 12_000), "everything")
        records = await stored(server)
    assert decode(records) == expected(0, 12_000)


async def test_rotations_under_continuous_writing_store_every_line_exactly_once(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.csv"
    async with serve_async() as server:
        config = daemon_config(
            tmp_path, server, f'mode = "tail"\npaths = ["{logs}/app.csv*"]\nrotate_wait = "1s"'
        )
        header = "ts,meter,channel,count,temp\n"
        total = 0
        async with running_daemon(config):
            writer = log.open("a")
            writer.write(header)
            for rotation in range(6):
                first_of_file = total
                for step in range(30):
                    writer.write(csv_rows(total, total + 10))
                    writer.flush()
                    total += 10
                    await asyncio.sleep(0.001)
                    if step == 15:  # rotations are far apart compared with polls
                        await eventually(holds(server, first_of_file + 1), "file seen")
                if rotation % 2:  # logrotate copytruncate
                    shutil.copyfile(log, logs / f"app.csv.{rotation}")
                    os.truncate(log, 0)
                    writer.write(header)
                else:  # rename and create
                    os.rename(log, logs / f"app.csv.{rotation}")
                    writer.write(csv_rows(total, total + 1))  # still appended to the old file
                    total += 1
                    writer.close()
                    writer = log.open("a")
                    writer.write(header)
            writer.write(csv_rows(total, total + 10))
            total += 10
            writer.close()
            await eventually(holds(server, total), "every line")
        records = await stored(server)
    assert decode(records) == expected(0, total)
