"""``tstoraged modbus probe``: read registers once and show them in every type and order.

For commissioning: the engineer reads the address the meter's manual gives and looks for
the number on the meter's display in the table; its row and column are the ``type`` and
``order`` to configure::

    tstoraged modbus probe --tcp 10.0.0.5 --unit 3 40001 --address-base 1
    tstoraged modbus probe --serial /dev/ttyUSB0 --baudrate 9600 --unit 7 --table input 0
    tstoraged modbus probe -c /etc/tstoraged/tstoraged.toml --device meter-1 --point voltage

The connection, unit, timeout and address base come from the flags, or from a configured
device (``--device``, optionally ``--source``); flags given as well override them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tstoraged.cli import EXIT_CONFIG_ERROR, EXIT_FAILURE, EXIT_OK, Subcommand
from tstoraged.cli._common import add_config_argument
from tstoraged_modbus.datatypes import BIT_TABLES, ORDERS, TABLES, Table, decode_all

if TYPE_CHECKING:
    from tstoraged_modbus.config import (
        ResolvedDevice,
        ResolvedPoint,
        SerialConnection,
        TcpConnection,
    )

__all__ = ["COMMAND", "ProbeRequest", "add_arguments", "run"]

DEFAULT_COUNT = 4
"""Registers read by default: enough for every 64-bit type."""
PROBE_WIDTH = 132
"""Columns the table needs to show 20-digit integers and 15-digit floats in full."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``tstoraged modbus <command>``: only ``probe`` for now."""
    commands = parser.add_subparsers(dest="modbus_command", metavar="<command>", required=True)
    probe = commands.add_parser(
        "probe",
        help="read registers once and print them in every data type and word order",
        description=(__doc__ or "").split("\n\n")[1].replace("\n", " "),
    )
    where = probe.add_argument_group("connection (or a configured --device)")
    choice = where.add_mutually_exclusive_group()
    choice.add_argument("--tcp", metavar="HOST[:PORT]", help="Modbus TCP (port 502 by default)")
    choice.add_argument(
        "--rtu-over-tcp", metavar="HOST[:PORT]", help="RTU frames over TCP (serial servers)"
    )
    choice.add_argument("--serial", metavar="PORT", help="RTU on a serial port, e.g. /dev/ttyUSB0")
    where.add_argument("--baudrate", type=int, help="serial: bits per second (default 19200)")
    where.add_argument("--parity", choices=["N", "E", "O"], help="serial: parity (default E)")
    where.add_argument("--stopbits", type=int, choices=[1, 2], help="serial: stop bits")
    where.add_argument("--bytesize", type=int, choices=[7, 8], help="serial: data bits")
    where.add_argument("--unit", type=int, help="unit id (default 1)")
    where.add_argument("--timeout", type=float, help="seconds to wait for the answer (default 1)")
    add_config_argument(probe)
    configured = probe.add_argument_group("a configured device (with -c)")
    configured.add_argument("--source", help="the modbus source of --device (if several)")
    configured.add_argument("--device", help="a device of the config: its connection and unit")
    configured.add_argument("--point", help="a point of --device: its table, address and width")
    what = probe.add_argument_group("what to read")
    what.add_argument("address", nargs="?", type=int, help="first register or bit")
    what.add_argument("--table", choices=list(TABLES), help="register table (default holding)")
    what.add_argument("--count", type=int, help=f"registers or bits (default {DEFAULT_COUNT})")
    what.add_argument(
        "--address-base",
        type=int,
        choices=[0, 1],
        help="1: ADDRESS is numbered from 1 (PLC style); default 0 or the device's",
    )
    probe.add_argument("--json", action="store_true", help="print JSON instead of a table")
    probe.set_defaults(_modbus_run=run)


def _dispatch(args: argparse.Namespace) -> int:
    status: int = args._modbus_run(args)
    return status


COMMAND = Subcommand(
    name="modbus",
    help="Modbus commissioning: probe a device's registers",
    add_arguments=add_arguments,
    run=_dispatch,
    description="Modbus commissioning tools of the modbus source plugin.",
)


@dataclass(frozen=True)
class ProbeRequest:
    """What one probe reads, and from where."""

    label: str
    connection: TcpConnection | SerialConnection
    unit: int
    timeout: float
    table: Table
    address: int
    """Protocol (0-based) address."""
    shown_address: int
    """The address as the user numbers it."""
    count: int
    point: ResolvedPoint | None = None


class ProbeError(Exception):
    """A probe that cannot run: one line for the user."""


def run(args: argparse.Namespace) -> int:
    """Run ``tstoraged modbus probe``; returns the exit status."""
    try:
        request = _request_from(args)
    except ProbeError as exc:
        print(f"tstoraged modbus probe: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        values = asyncio.run(_read(request))
    except ProbeError as exc:
        print(f"tstoraged modbus probe: {request.label}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(_as_json(request, values)))
    else:
        _print_table(request, values)
    return EXIT_OK


def _split_host(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if not host:
        return text, 502
    try:
        return host, int(port)
    except ValueError:
        raise ProbeError(f"bad port in {text!r}") from None


def _configured_device(args: argparse.Namespace) -> ResolvedDevice:
    from tstoraged.cli._common import load_settings
    from tstoraged_modbus.config import ModbusConfig, resolve

    settings, _ = load_settings(args)
    sources = [
        s
        for s in settings.sources
        if isinstance(s, ModbusConfig) and (args.source is None or s.name == args.source)
    ]
    if not sources:
        raise ProbeError(
            f"no modbus source {args.source!r} in the config"
            if args.source
            else "the config has no modbus source"
        )
    found = [
        (source, device)
        for source in sources
        for device in resolve(source)
        if device.config.name == args.device
    ]
    if not found:
        raise ProbeError(f"no device {args.device!r} in the config's modbus sources")
    if len(found) > 1:
        names = ", ".join(source.name for source, _ in found)
        raise ProbeError(f"device {args.device!r} is in several sources ({names}): give --source")
    return found[0][1]


def _request_from(args: argparse.Namespace) -> ProbeRequest:
    from tstoraged_modbus.config import SerialConnection, TcpConnection

    device = _configured_device(args) if args.device else None
    connection: TcpConnection | SerialConnection
    if args.tcp or args.rtu_over_tcp:
        host, port = _split_host(args.tcp or args.rtu_over_tcp)
        connection = TcpConnection(
            transport="tcp" if args.tcp else "rtu_over_tcp", host=host, port=port
        )
    elif args.serial:
        serial: dict[str, Any] = {"transport": "serial", "port": args.serial}
        for name in ("baudrate", "parity", "stopbits", "bytesize"):
            if getattr(args, name) is not None:
                serial[name] = getattr(args, name)
        connection = SerialConnection.model_validate(serial)
    elif device is not None:
        connection = device.connection
    else:
        raise ProbeError("say where the device is: --tcp, --rtu-over-tcp, --serial or --device")
    point = None
    if args.point:
        if device is None:
            raise ProbeError("--point needs --device")
        point = next((p for p in device.points if p.name == args.point), None)
        if point is None:
            known = ", ".join(p.name for p in device.points)
            raise ProbeError(f"device {device.config.name!r} has no point {args.point!r} ({known})")
    base = args.address_base
    if base is None:
        base = device.config.address_base if device is not None else 0
    table: Table = args.table or (point.table if point else "holding")
    if args.address is not None:
        shown = args.address
    elif point is not None:
        shown = point.configured_address
    else:
        raise ProbeError("give the ADDRESS to read (or --point)")
    address = shown - base
    default_count = point.width if point is not None else (1 if table in BIT_TABLES else 4)
    count = args.count or default_count
    limit = 2000 if table in BIT_TABLES else 125
    if address < 0 or address + count > 65536 or not 1 <= count <= limit:
        raise ProbeError(
            f"cannot read {count} from {table} address {shown} (address base {base}; "
            f"at most {limit} per read, addresses 0-65535)"
        )
    unit = args.unit if args.unit is not None else (device.config.unit if device else 1)
    timeout = args.timeout or (device.config.timeout if device else 1.0)
    where = f"unit {unit} on {_describe(connection)}"
    label = f"device {device.config.name} ({where})" if device else where
    return ProbeRequest(label, connection, unit, timeout, table, address, shown, count, point)


def _describe(connection: TcpConnection | SerialConnection) -> str:
    from tstoraged_modbus.link import Link

    return Link("probe", connection).description


async def _read(request: ProbeRequest) -> list[int] | list[bool]:
    from tstoraged_modbus.link import Link, ModbusFailure, RequestTarget, quiet_pymodbus

    quiet_pymodbus()
    link = Link("probe", request.connection)
    try:
        response = await link.read(
            RequestTarget(request.unit, request.timeout),
            request.table,
            request.address,
            request.count,
        )
    except ModbusFailure as exc:
        raise ProbeError(exc.message) from None
    finally:
        link.close()
    return list(response.values)


def _formatted(data_type: str, value: int | float | str) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:.7g}" if data_type == "float32" else f"{value:.15g}"
    return str(value)


def _print_table(request: ProbeRequest, values: list[int] | list[bool]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    # Wide enough that no number is cut short: a digit lost is a wrong number.
    console = Console(highlight=False, width=max(Console().width, PROBE_WIDTH))
    span = f"{request.shown_address}-{request.shown_address + request.count - 1}"
    console.print(f"{request.label} {request.table} {span}")
    if request.table in BIT_TABLES:
        bits = RichTable("address", "value")
        for offset, bit in enumerate(values):
            bits.add_row(str(request.shown_address + offset), "1" if bit else "0")
        console.print(bits)
        return
    registers = [int(v) for v in values]
    console.print("registers: " + " ".join(f"0x{r:04X}" for r in registers))
    point = request.point
    table = RichTable(title="value at the first address, by type and order", title_justify="left")
    table.add_column("type")
    for order in ORDERS:
        table.add_column(order, justify="right")
    for data_type, by_order in decode_all(registers).items():
        cells = []
        for order in ORDERS:
            text = _formatted(data_type, by_order[order])
            if point is not None and (point.data_type, point.order) == (data_type, order):
                text = f"[bold]{text} *[/bold]"
            cells.append(text)
        table.add_row(data_type, *cells)
    console.print(table)
    console.print(
        "16-bit types have only a byte order: ABCD = CDAB and BADC = DCBA. "
        "string uses every register read."
    )
    if point is not None:
        console.print(f"* configured: point {point.name} = {point.data_type} {point.order}")


def _as_json(request: ProbeRequest, values: list[int] | list[bool]) -> dict[str, Any]:
    document: dict[str, Any] = {
        "connection": _describe(request.connection),
        "unit": request.unit,
        "table": request.table,
        "address": request.shown_address,
        "count": request.count,
    }
    if request.table in BIT_TABLES:
        document["bits"] = [bool(v) for v in values]
        return document
    registers = [int(v) for v in values]
    document["registers"] = registers

    def clean(value: int | float | str) -> int | float | str | None:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    document["values"] = {
        data_type: {order: clean(value) for order, value in by_order.items()}
        for data_type, by_order in decode_all(registers).items()
    }
    return document
