"""``tstoraged modbus probe`` against a real pymodbus server (in a thread of its own)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from modbus_harness import Running, Unit, registers_of, tcp_server

from tstoraged.cli import main

LEVEL = registers_of("float32", "CDAB", 123.456)  # a meter that sends the low word first


@contextmanager
def threaded_server(unit: Unit) -> Iterator[Running]:
    """A pymodbus TCP server with its own event loop, for a command that runs its own."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    running: list[Running] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with tcp_server(unit) as server:
            running.append(server)
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield running[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


@pytest.fixture(autouse=True)
def modbus_plugin_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line finds the plugin's `modbus` command through its entry point."""
    monkeypatch.setenv("TSTORAGED_LOAD_PLUGINS", "codecs,modbus")


@pytest.fixture
def meter() -> Iterator[Running]:
    unit = Unit(3, holding={100: [*LEVEL, 0, 0], 200: [0x4142, 0x4344]}, coils={0: [True, False]})
    with threaded_server(unit) as server:
        yield server


def test_probe_shows_every_type_and_order_as_json(
    meter: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    port = meter.port
    status = main(["modbus", "probe", "--tcp", f"127.0.0.1:{port}", "--unit", "3", "100", "--json"])
    assert status == 0
    document = json.loads(capsys.readouterr().out)
    assert document["registers"] == [*LEVEL, 0, 0]
    assert f"{document['values']['float32']['CDAB']:.7g}" == "123.456"
    assert f"{document['values']['float32']['ABCD']:.7g}" != "123.456"
    assert set(document["values"]) == {
        "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
    }  # fmt: skip


def test_probe_prints_one_table_with_the_configured_cell_marked(
    meter: Running,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    config = tmp_path / "tstoraged.toml"
    config.write_text(
        f"""
[[sources]]
type = "modbus"
name = "plant"
cid = 1

[[sources.devices]]
name = "meter-1"
connection = {{ transport = "tcp", host = "127.0.0.1", port = {meter.port} }}
unit = 3
mid = 1
address_base = 1
points = [{{ name = "level", address = 101, type = "float32", order = "CDAB", moid = 1 }}]
"""
    )
    status = main(["modbus", "probe", "-c", str(config), "--device", "meter-1", "--point", "level"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"device meter-1 (unit 3 on tcp 127.0.0.1:{meter.port}) holding 101-102" in out
    assert f"registers: 0x{LEVEL[0]:04X} 0x{LEVEL[1]:04X}" in out
    float_row = next(line for line in out.splitlines() if line.strip("│ ").startswith("float32"))
    cells = [cell.strip() for cell in float_row.strip("│").split("│")]
    assert cells[0] == "float32"
    assert cells[2] == "123.456 *"  # the CDAB column, marked as configured
    assert "* configured: point level = float32 CDAB" in out


def test_probe_reads_coils_as_bits(meter: Running, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--tcp", f"127.0.0.1:{meter.port}", "--unit", "3"]
    status = main(["modbus", "probe", *where, "--table", "coil", "0", "--count", "2", "--json"])
    assert status == 0
    assert json.loads(capsys.readouterr().out)["bits"] == [True, False]


def test_probe_names_the_exception_a_device_answers(
    meter: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["modbus", "probe", "--tcp", f"127.0.0.1:{meter.port}", "--unit", "3", "150"])
    err = capsys.readouterr().err
    assert status == 1
    assert err == (
        f"tstoraged modbus probe: unit 3 on tcp 127.0.0.1:{meter.port}: "
        "exception 0x02 (illegal data address)\n"
    )


def test_probe_says_when_it_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    status = main(["modbus", "probe", "--tcp", f"127.0.0.1:{port}", "0"])
    err = capsys.readouterr().err
    assert status == 1
    assert f"cannot connect to tcp 127.0.0.1:{port}" in err
    assert len(err.splitlines()) == 1
