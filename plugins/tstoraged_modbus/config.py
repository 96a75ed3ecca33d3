"""The ``type = "modbus"`` source configuration, and its resolution into devices and points.

Shape::

    [[sources]]
    type = "modbus"
    name = "plant"
    cid = 7                                   # default cid of every point
    interval = "10s"                          # the "default" poll group
    poll_groups = { fast = { interval = "1s" } }

    [sources.connections.rs485]               # shared by the devices naming it
    transport = "serial"                      # "tcp", "serial" or "rtu_over_tcp"
    port = "/dev/ttyUSB0"
    baudrate = 19200

    [sources.maps.pm]                         # a register map several devices use
    ...

    [[sources.devices]]
    name = "meter-1"
    connection = "rs485"                      # or an inline table
    unit = 1
    mid = 1001
    map = "pm"
    points = [ { name = "voltage", address = 0, type = "float32", moid = 1, group = "fast" } ]

:func:`resolve` turns a validated config into :class:`ResolvedDevice` s with their
:class:`ResolvedPoint` s (protocol addresses, widths, inherited settings). The model's
validator runs the same resolution and reports every problem at its exact key path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tstorage_client.record import CID_MAX, CID_MIN, MID_MAX, MID_MIN, MOID_MAX, MOID_MIN
from tstoraged.config.units import Duration
from tstoraged.mapping.model import CapMapping, FieldRef, KeyMapping, PayloadMapping, template_field
from tstoraged.source import Name, SourceConfig
from tstoraged_modbus.datatypes import (
    BIT_TABLES,
    FLOAT_TYPES,
    DataType,
    Order,
    Table,
    register_width,
)
from tstoraged_modbus.plan import MAX_READ_BITS, MAX_READ_REGISTERS

__all__ = [
    "CaptureTime",
    "ConnectionConfig",
    "DeviceConfig",
    "Encoding",
    "ModbusConfig",
    "PointConfig",
    "PollGroup",
    "ResolvedDevice",
    "ResolvedPoint",
    "SerialConnection",
    "TcpConnection",
    "resolve",
]

Encoding = Literal["float64", "integer"]
"""Payload of a point: the scaled value as one float64, or the raw integer as read."""
CaptureTime = Literal["request", "response", "scheduled"]

_STRICT = ConfigDict(extra="forbid", frozen=True)
_PARITY = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}

Cid = Annotated[int, Field(ge=CID_MIN, le=CID_MAX - 1)]
Mid = Annotated[int, Field(ge=MID_MIN, le=MID_MAX - 1)]
Moid = Annotated[int, Field(ge=MOID_MIN, le=MOID_MAX - 1)]


class PollGroup(BaseModel):
    """How often the points of one group are read."""

    model_config = _STRICT

    interval: Duration = Field(gt=0, description="Time between polls, aligned to the clock.")
    offset: Duration = Field(
        default=0.0, ge=0, description="Shift from the interval boundaries (0: :00, :10, ...)."
    )
    max_lateness: Duration | None = Field(
        default=None,
        ge=0,
        description="How late a poll may start before it is skipped and counted "
        "(default: a tenth of the interval, at most 1 s).",
    )


class _Reconnect(BaseModel):
    model_config = _STRICT

    connect_timeout: Duration = Field(default=3.0, gt=0, description="Time to connect or open.")
    reconnect_delay: Duration = Field(
        default=1.0, gt=0, description="First wait after a failed connect; doubles each time."
    )
    reconnect_delay_max: Duration = Field(
        default=60.0, gt=0, description="Longest wait between connect attempts."
    )


class TcpConnection(_Reconnect):
    """Modbus TCP, or RTU frames over a TCP socket (serial device servers)."""

    transport: Literal["tcp", "rtu_over_tcp"] = Field(
        description="tcp: Modbus TCP (MBAP header); rtu_over_tcp: RTU frames (with CRC) "
        "over TCP, as transparent serial servers pass them."
    )
    host: str = Field(min_length=1, description="Host name or IP address.")
    port: int = Field(default=502, ge=1, le=65535, description="TCP port.")


class SerialConnection(_Reconnect):
    """Modbus RTU on a serial line (RS-485/RS-232), through pyserial."""

    transport: Literal["serial"] = Field(description="RTU over a serial port.")
    port: str = Field(min_length=1, description='Serial device, e.g. "/dev/ttyUSB0".')
    baudrate: int = Field(default=19200, gt=0, le=4_000_000, description="Bits per second.")
    bytesize: Literal[7, 8] = Field(default=8, description="Data bits.")
    parity: Literal["N", "E", "O"] = Field(
        default="E", description='"N" (none), "E" (even, the Modbus default) or "O" (odd).'
    )
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits.")
    byte_timeout: Duration | None = Field(
        default=None,
        gt=0,
        description="Longest silence inside a response frame: a frame that stalls longer is "
        "dropped at once instead of waiting for the whole timeout (unset: no limit).",
    )

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_spelling(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _PARITY.get(value.strip().lower(), value)
        return value

    @property
    def char_time(self) -> float:
        """Seconds one character takes on the line (start, data, parity, stop bits)."""
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return bits / self.baudrate

    @property
    def frame_gap(self) -> float:
        """The silence that ends an RTU frame: 3.5 characters, 1.75 ms above 19200 baud."""
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.char_time


ConnectionConfig = Annotated[TcpConnection | SerialConnection, Field(discriminator="transport")]


class PointConfig(BaseModel):
    """One value of a device's register map."""

    model_config = _STRICT

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Shown in logs, metrics and status (default: table:address).",
    )
    table: Table = Field(default="holding", description="coil, discrete_input, holding or input.")
    address: int = Field(
        ge=0, le=65536, description="First register or bit, numbered by the device's address_base."
    )
    type: DataType | None = Field(
        default=None, description="Data type (default: bool in bit tables, uint16 in registers)."
    )
    bit: int | None = Field(
        default=None, ge=0, le=15, description="A bool in a register: its bit (0 = lowest)."
    )
    length: int | None = Field(
        default=None, ge=1, le=MAX_READ_REGISTERS, description="Registers a string takes."
    )
    order: Order | None = Field(
        default=None, description="Byte and word order (default: the device's)."
    )
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")
    encoding: Encoding | None = Field(
        default=None, description="Payload: float64 (scaled) or integer (raw); default: device's."
    )
    mid: Mid | None = Field(default=None, description="Meter id (default: the device's).")
    moid: Moid | None = Field(default=None, description="Meter object id of this value.")
    group: str = Field(default="default", min_length=1, description="Poll group of the point.")

    @model_validator(mode="after")
    def _shape(self) -> PointConfig:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        data_type = self.resolved_type
        if self.table in BIT_TABLES:
            if data_type != "bool":
                problems.append(
                    (("type",), f"a {self.table} holds one bit: only bool fits", data_type)
                )
            if self.bit is not None:
                problems.append((("bit",), f"a {self.table} is a single bit already", self.bit))
        elif data_type == "bool" and self.bit is None:
            problems.append(
                ((), f"bit is required: a bool in a {self.table} register is one of its bits", None)
            )
        elif data_type != "bool" and self.bit is not None:
            problems.append((("bit",), "bit is only for type = 'bool'", self.bit))
        if data_type == "string" and self.length is None:
            problems.append(((), "length is required: the registers a string takes", None))
        if data_type != "string" and self.length is not None:
            problems.append((("length",), "length is only for type = 'string'", self.length))
        if self.encoding == "integer" and (data_type in FLOAT_TYPES or data_type == "string"):
            problems.append(
                (("encoding",), "an integer payload needs an integer or bool type", data_type)
            )
        if problems:
            raise _validation_error("PointConfig", problems)
        return self

    @property
    def resolved_type(self) -> DataType:
        """The data type, with the table's default filled in."""
        if self.type is not None:
            return self.type
        return "bool" if self.table in BIT_TABLES else "uint16"


def _validation_error(
    title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]
) -> ValidationError:
    """One ValidationError holding every problem at its own key path."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("modbus_config", "{message}", {"message": message}),
                loc=loc,
                input=value,
            )
            for loc, message, value in problems
        ],
    )


class DeviceConfig(BaseModel):
    """One Modbus device (a unit id behind a connection)."""

    model_config = _STRICT

    name: Name = Field(description="Unique within the source.")
    connection: str | ConnectionConfig = Field(
        description="Name of a [sources.connections] entry, or an inline connection table."
    )
    unit: int = Field(
        default=1, ge=0, le=255, description="Unit id (slave address): 1-247 on serial lines."
    )
    cid: Cid | None = Field(default=None, description="Client id of its points (or source's).")
    mid: Mid | None = Field(default=None, description="Meter id of its points (their default).")
    map: str | None = Field(default=None, description="Name of a [sources.maps] register map.")
    points: list[PointConfig] = Field(default_factory=list, description="Its own points.")
    address_base: Literal[0, 1] = Field(
        default=0, description="1: addresses are numbered from 1, as in PLC manuals (40001 style)."
    )
    order: Order = Field(default="ABCD", description="Default byte and word order of its points.")
    encoding: Encoding = Field(default="float64", description="Default payload of its points.")
    timeout: Duration = Field(default=1.0, gt=0, description="Time to wait for one response.")
    retries: int = Field(
        default=1, ge=0, le=10, description="Repeats of a request that got no response."
    )
    busy_retries: int = Field(
        default=3, ge=0, le=100, description="Repeats of a request answered 'busy' or 'ack'."
    )
    busy_wait: Duration = Field(default=0.1, ge=0, description="Wait before repeating after busy.")
    pause_after_connect: Duration = Field(
        default=0.0, ge=0, description="Silence after (re)connecting, before the first request."
    )
    pause_between_requests: Duration = Field(
        default=0.0, ge=0, description="Silence on the connection before each request to it."
    )
    close_after_poll: bool = Field(
        default=False, description="Close the connection after each poll (one-master devices)."
    )
    backoff_max: Duration = Field(
        default=60.0,
        gt=0,
        description="A device that stops answering is polled less often, at most this far apart.",
    )
    max_gap: int = Field(
        default=8,
        ge=0,
        le=MAX_READ_BITS,
        description="Unmapped registers (or bits) one read may span to join two points.",
    )
    max_registers: int = Field(
        default=MAX_READ_REGISTERS, ge=1, le=MAX_READ_REGISTERS, description="Registers per read."
    )
    max_bits: int = Field(
        default=MAX_READ_BITS, ge=1, le=MAX_READ_BITS, description="Coils or inputs per read."
    )
    refused_point_retry: Duration = Field(
        default=600.0,
        gt=0,
        description="How long a point the device refuses (illegal address) is left out.",
    )
    interval: Duration | None = Field(
        default=None, gt=0, description="Interval of its 'default' group (default: source's)."
    )
    poll_groups: dict[str, PollGroup] = Field(
        default_factory=dict, description="Overrides of the source's poll groups for it."
    )


class ModbusConfig(SourceConfig):
    """Settings of a ``modbus`` source: connections, devices, register maps, poll groups."""

    type: Literal["modbus"] = "modbus"
    key: KeyMapping = Field(
        default_factory=lambda: KeyMapping(cid="{cid}", mid="{mid}", moid="{moid}"),
        description="How fields become cid, mid and moid.",
    )
    cap: CapMapping = Field(
        default_factory=lambda: CapMapping(field="ts", unit="ns"),
        description="How the capture time is found (field ts: see capture_time).",
    )
    payload: PayloadMapping = Field(
        default_factory=lambda: PayloadMapping(codec="modbus"),
        description="How fields become the payload bytes.",
    )
    cid: Cid | None = Field(default=None, description="Client id of every point (default).")
    capture_time: CaptureTime = Field(
        default="request",
        description="The instant in field ts: when the request was sent, when the response "
        "arrived, or the scheduled poll instant.",
    )
    interval: Duration = Field(
        default=10.0, gt=0, description="Interval of the 'default' poll group."
    )
    poll_groups: dict[str, PollGroup] = Field(
        default_factory=dict, description="Named poll groups with their own intervals."
    )
    connections: dict[str, ConnectionConfig] = Field(
        default_factory=dict, description="Named connections that devices share."
    )
    maps: dict[str, list[PointConfig]] = Field(
        default_factory=dict, description="Named register maps that devices use."
    )
    devices: list[DeviceConfig] = Field(min_length=1, description="The devices to poll.")

    @model_validator(mode="after")
    def _consistent(self) -> ModbusConfig:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        resolve(self, problems)
        if problems:
            raise _validation_error("ModbusConfig", problems)
        return self

    def groups_of(self, device: DeviceConfig) -> dict[str, PollGroup]:
        """The poll groups a device's points may name, with the device's overrides."""
        groups = {
            "default": PollGroup(interval=self.interval),
            **self.poll_groups,
            **device.poll_groups,
        }
        if device.interval is not None:
            groups["default"] = groups["default"].model_copy(update={"interval": device.interval})
        return groups


# -- resolution --------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ResolvedPoint:
    """A point of one device, with everything inherited and its protocol address."""

    device: str
    name: str
    table: Table
    address: int
    """Protocol (0-based) address."""
    configured_address: int
    width: int
    data_type: DataType
    bit: int | None
    length: int | None
    order: Order
    scale: float
    offset: float
    encoding: Encoding
    cid: int | None
    mid: int | None
    moid: int | None
    group: str
    loc: Loc
    """Key path of the point in the source config (for messages)."""

    @property
    def end(self) -> int:
        """The protocol address after its last register or bit."""
        return self.address + self.width

    @property
    def where(self) -> str:
        """``holding:40001`` style, as configured."""
        where = f"{self.table}:{self.configured_address}"
        return f"{where}.{self.bit}" if self.bit is not None else where


@dataclass(frozen=True)
class ResolvedDevice:
    """A device with its connection (named, or ``@<device>`` for an inline one)."""

    config: DeviceConfig
    connection_name: str
    connection: TcpConnection | SerialConnection
    points: tuple[ResolvedPoint, ...]
    groups: Mapping[str, PollGroup]
    loc: Loc


_KEY_FIELDS = ("cid", "mid", "moid")


def _key_fields(key: KeyMapping) -> set[str]:
    """The fields among cid/mid/moid that the key mapping reads."""
    used = set()
    for part in (key.cid, key.mid, key.moid):
        if isinstance(part, str):
            name = template_field(part)
        elif isinstance(part, FieldRef):
            name = part.field
        else:
            name = None
        if name in _KEY_FIELDS:
            used.add(name)
    return used


def resolve(
    config: ModbusConfig, problems: list[tuple[Loc, str, Any]] | None = None
) -> list[ResolvedDevice]:
    """Devices with their points resolved; problems are appended to ``problems`` (or raised)."""
    collected: list[tuple[Loc, str, Any]] = [] if problems is None else problems
    devices: list[ResolvedDevice] = []
    names: dict[str, int] = {}
    units: dict[tuple[str, int], str] = {}
    ports: dict[str, str] = {}
    keys: dict[tuple[int | None, int | None, int | None], tuple[str, str]] = {}
    needed = _key_fields(config.key)
    for name, connection in config.connections.items():
        if isinstance(connection, SerialConnection):
            other = ports.setdefault(connection.port, name)
            if other != name:
                collected.append(
                    (
                        ("connections", name, "port"),
                        f"serial port also used by connection {other!r}: devices on one "
                        "line share one connection",
                        connection.port,
                    )
                )
    for index, device in enumerate(config.devices):
        loc: Loc = ("devices", index)
        if device.name in names:
            collected.append(
                (
                    (*loc, "name"),
                    f"duplicate device name (also devices[{names[device.name]}].name)",
                    device.name,
                )
            )
        names.setdefault(device.name, index)
        found = _connection_of(config, device, loc, collected)
        if found is None:
            continue
        connection_name, settings = found
        _check_unit(device, settings, connection_name, loc, units, collected)
        groups = config.groups_of(device)
        points = _points_of(config, device, loc, needed, groups, collected)
        for point in points:
            key = (point.cid, point.mid, point.moid)
            if needed != set(_KEY_FIELDS) or None in key:
                continue  # the key is built another way; only the mapping knows it
            owner = keys.setdefault(key, (device.name, point.name))
            if owner != (device.name, point.name):
                collected.append(
                    (
                        point.loc,
                        f"same key (cid {key[0]}, mid {key[1]}, moid {key[2]}) as point "
                        f"{owner[1]!r} of device {owner[0]!r}: their records would overwrite "
                        "each other",
                        None,
                    )
                )
        if not points and not any(loc == p[0][: len(loc)] for p in collected):
            collected.append((loc, "a device needs points (points = [...] or map = ...)", None))
        devices.append(
            ResolvedDevice(device, connection_name, settings, tuple(points), groups, loc)
        )
    if problems is None and collected:
        raise _validation_error("ModbusConfig", collected)
    return devices


def _connection_of(
    config: ModbusConfig, device: DeviceConfig, loc: Loc, problems: list[tuple[Loc, str, Any]]
) -> tuple[str, TcpConnection | SerialConnection] | None:
    if not isinstance(device.connection, str):
        return f"@{device.name}", device.connection
    settings = config.connections.get(device.connection)
    if settings is None:
        known = ", ".join(sorted(config.connections)) or "none defined"
        problems.append(
            (
                (*loc, "connection"),
                f"unknown connection (known: {known}); define it in [sources.connections] "
                "or give an inline table",
                device.connection,
            )
        )
        return None
    return device.connection, settings


def _check_unit(
    device: DeviceConfig,
    settings: TcpConnection | SerialConnection,
    connection_name: str,
    loc: Loc,
    units: dict[tuple[str, int], str],
    problems: list[tuple[Loc, str, Any]],
) -> None:
    if settings.transport != "tcp" and not 1 <= device.unit <= 247:
        problems.append(
            (
                (*loc, "unit"),
                "unit ids on a serial line are 1-247 (broadcasts cannot be read)",
                device.unit,
            )
        )
    other = units.setdefault((connection_name, device.unit), device.name)
    if other != device.name:
        problems.append(
            (
                (*loc, "unit"),
                f"unit id also used by device {other!r} on connection {connection_name!r}",
                device.unit,
            )
        )


def _map_points(
    config: ModbusConfig, device: DeviceConfig, loc: Loc, problems: list[tuple[Loc, str, Any]]
) -> Iterator[tuple[PointConfig, Loc]]:
    if device.map is not None:
        register_map = config.maps.get(device.map)
        if register_map is None:
            known = ", ".join(sorted(config.maps)) or "none defined"
            problems.append(((*loc, "map"), f"unknown register map (known: {known})", device.map))
        else:
            for index, point in enumerate(register_map):
                yield point, ("maps", device.map, index)
    for index, point in enumerate(device.points):
        yield point, (*loc, "points", index)


def _points_of(
    config: ModbusConfig,
    device: DeviceConfig,
    loc: Loc,
    needed: set[str],
    groups: Mapping[str, PollGroup],
    problems: list[tuple[Loc, str, Any]],
) -> list[ResolvedPoint]:
    points: list[ResolvedPoint] = []
    names: dict[str, Loc] = {}
    for point, point_loc in _map_points(config, device, loc, problems):
        in_map = point_loc[0] == "maps"
        suffix = f" (device {device.name!r})" if in_map else ""
        wire = point.address - device.address_base
        data_type = point.resolved_type
        width = 1 if point.table in BIT_TABLES else register_width(data_type, point.length or 1)
        if wire < 0:
            problems.append(
                (
                    (*point_loc, "address"),
                    f"below the first address: address_base is {device.address_base}{suffix}",
                    point.address,
                )
            )
            continue
        if wire + width - 1 > 65535:
            last = 65535 + device.address_base
            problems.append(
                (
                    (*point_loc, "address"),
                    f"a {data_type} here ends past the last address ({last}){suffix}",
                    point.address,
                )
            )
            continue
        name = point.name or f"{point.table}:{point.address}" + (
            f".{point.bit}" if point.bit is not None else ""
        )
        if name in names:
            problems.append(
                (
                    (*point_loc, "name"),
                    f"duplicate point name on device {device.name!r} (also {_path(names[name])})",
                    name,
                )
            )
        names.setdefault(name, point_loc)
        if point.group not in groups:
            known = ", ".join(sorted(groups))
            problems.append(
                ((*point_loc, "group"), f"unknown poll group (known: {known}){suffix}", point.group)
            )
        resolved = ResolvedPoint(
            device=device.name,
            name=name,
            table=point.table,
            address=wire,
            configured_address=point.address,
            width=width,
            data_type=data_type,
            bit=point.bit,
            length=point.length,
            order=point.order or device.order,
            scale=point.scale,
            offset=point.offset,
            encoding=point.encoding or device.encoding,
            cid=config.cid if device.cid is None else device.cid,
            mid=point.mid if point.mid is not None else device.mid,
            moid=point.moid,
            group=point.group,
            loc=point_loc,
        )
        if resolved.encoding == "integer" and (data_type in FLOAT_TYPES or data_type == "string"):
            problems.append(
                (
                    (*point_loc, "type"),
                    f"device {device.name!r} has encoding = 'integer', which a "
                    f"{data_type} cannot have: give this point encoding = 'float64'",
                    data_type,
                )
            )
        for part in sorted(needed):
            if getattr(resolved, part) is None:
                where = {"cid": "the source or device", "mid": "the point or device"}
                problems.append(
                    (
                        point_loc,
                        f"no {part}: the key mapping takes {part} from each point; set it on "
                        f"{where.get(part, 'the point')}{suffix}",
                        None,
                    )
                )
        overlap = _overlap(resolved, points)
        if overlap is not None:
            problems.append(
                (
                    (*point_loc, "address"),
                    f"overlaps point {overlap.name!r} ({overlap.data_type} at "
                    f"{overlap.where}) with a different type or span{suffix}",
                    point.address,
                )
            )
        points.append(resolved)
    return points


def _overlap(point: ResolvedPoint, others: list[ResolvedPoint]) -> ResolvedPoint | None:
    """An earlier point whose addresses intersect ``point``'s, unless the two agree.

    Points agree when they read the same span as the same type (the same value with another
    scale or key), or when both are bits of one register.
    """
    for other in others:
        if other.table != point.table or other.end <= point.address or point.end <= other.address:
            continue
        same_span = (other.address, other.width) == (point.address, point.width)
        if same_span and other.data_type == point.data_type:
            continue  # the same value again, or bits of one register
        return other
    return None


def _path(loc: Loc) -> str:
    from tstoraged.config.errors import format_path

    return format_path(loc)
