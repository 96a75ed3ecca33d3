"""Config validation before start: every problem at once, each at its exact key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from tstoraged_modbus import ModbusConfig
from tstoraged_modbus.config import resolve

from tstoraged.config.errors import ConfigError
from tstoraged.config.loader import load_config
from tstoraged.plugins import PluginManager

ENV = {"TSTORAGED_LOAD_PLUGINS": "codecs,modbus"}

HEAD = """
[[sources]]
type = "modbus"
name = "plant"
cid = 1

[sources.connections.bus]
transport = "serial"
port = "/dev/ttyUSB0"
"""


def problems(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "tstoraged.toml"
    path.write_text(HEAD + body)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV, PluginManager.from_entry_points(ENV))
    prefix = f"{path}: "
    return [str(problem).removeprefix(prefix) for problem in caught.value.problems]


def test_overlapping_points_of_different_types_are_refused(tmp_path: Path) -> None:
    body = """
[[sources.devices]]
name = "meter"
connection = "bus"
mid = 1
points = [
  { name = "energy", address = 0, type = "uint32", moid = 1 },
  { name = "energy_kwh", address = 0, type = "uint32", scale = 0.001, moid = 2 },
  { name = "power", address = 1, type = "int16", moid = 3 },
  { name = "alarm", address = 10, type = "bool", bit = 3, moid = 4 },
  { name = "trip", address = 10, type = "bool", bit = 4, moid = 5 },
  { name = "status", address = 10, type = "uint16", moid = 6 },
]
"""
    assert problems(tmp_path, body) == [
        "sources[0].devices[0].points[2].address = 1: overlaps point 'energy' (uint32 at "
        "holding:0) with a different type or span",
        # (the value is not repeated where the message shows it)
        "sources[0].devices[0].points[5].address: overlaps point 'alarm' (bool at "
        "holding:10.3) with a different type or span",
    ]


def test_addresses_out_of_range_are_refused(tmp_path: Path) -> None:
    body = """
[[sources.devices]]
name = "meter"
connection = "bus"
mid = 1
address_base = 1
points = [
  { name = "zero", address = 0, moid = 1 },
  { name = "last", address = 65535, moid = 2 },
  { name = "past", address = 65536, type = "float32", moid = 3 },
  { name = "beyond", address = 70000, moid = 4 },
]
"""
    assert problems(tmp_path, body) == [
        "sources[0].devices[0].points[3].address = 70000: expected less than or equal to 65536",
    ]
    body = body.replace('{ name = "beyond", address = 70000, moid = 4 },', "")
    assert problems(tmp_path, body) == [
        "sources[0].devices[0].points[0].address = 0: below the first address: address_base is 1",
        "sources[0].devices[0].points[2].address: a float32 here ends past the last "
        "address (65536)",
    ]


def test_a_type_too_wide_for_its_table_is_refused(tmp_path: Path) -> None:
    body = """
[[sources.devices]]
name = "meter"
connection = "bus"
mid = 1
points = [
  { name = "relay", table = "coil", address = 0, type = "int16", moid = 1 },
  { name = "door", table = "discrete_input", address = 0, bit = 2, moid = 2 },
  { name = "alarm", table = "holding", address = 5, type = "bool", moid = 3 },
  { name = "name", table = "input", address = 9, type = "string", moid = 4 },
  { name = "level", address = 20, type = "float32", encoding = "integer", moid = 5 },
]
"""
    assert problems(tmp_path, body) == [
        "sources[0].devices[0].points[0].type = 'int16': a coil holds one bit: only bool fits",
        "sources[0].devices[0].points[1].bit = 2: a discrete_input is a single bit already",
        "sources[0].devices[0].points[2]: bit is required: a bool in a holding register is one "
        "of its bits",
        "sources[0].devices[0].points[3]: length is required: the registers a string takes",
        "sources[0].devices[0].points[4].encoding = 'integer': an integer payload needs an "
        "integer or bool type",
    ]


def test_two_devices_with_one_unit_id_on_one_connection_are_refused(tmp_path: Path) -> None:
    body = """
[[sources.devices]]
name = "a"
connection = "bus"
unit = 3
mid = 1
points = [{ address = 0, moid = 1 }]

[[sources.devices]]
name = "b"
connection = "bus"
unit = 3
mid = 2
points = [{ address = 0, moid = 1 }]

[[sources.devices]]
name = "c"
connection = "bus"
unit = 0
mid = 3
points = [{ address = 0, moid = 1 }]

[[sources.devices]]
name = "d"
connection = { transport = "tcp", host = "10.0.0.9" }
unit = 3
mid = 4
points = [{ address = 0, moid = 1 }]
"""
    assert problems(tmp_path, body) == [
        "sources[0].devices[1].unit = 3: unit id also used by device 'a' on connection 'bus'",
        "sources[0].devices[2].unit = 0: unit ids on a serial line are 1-247 (broadcasts "
        "cannot be read)",
    ]


def test_references_keys_and_map_points_are_checked_where_they_are_written(
    tmp_path: Path,
) -> None:
    body = """
[[sources.maps.pm]]
name = "voltage"
address = 0
type = "float32"
moid = 1
group = "fast"

[[sources.maps.pm]]
name = "current"
address = 1
type = "float32"
moid = 2
group = "fast"

[[sources.devices]]
name = "m1"
connection = "rs485"
mid = 1
map = "pm"

[[sources.devices]]
name = "m2"
connection = "bus"
map = "pm"
poll_groups = { fast = { interval = "1s" } }
points = [{ name = "energy", address = 10, type = "uint64", moid = 3 }]

[[sources.devices]]
name = "m3"
connection = "bus"
unit = 2
mid = 3
map = "meters"
"""
    assert problems(tmp_path, body) == [
        "sources[0].devices[0].connection = 'rs485': unknown connection (known: bus); define "
        "it in [sources.connections] or give an inline table",
        "sources[0].maps.pm[0]: no mid: the key mapping takes mid from each point; set it on "
        "the point or device (device 'm2')",
        "sources[0].maps.pm[1]: no mid: the key mapping takes mid from each point; set it on "
        "the point or device (device 'm2')",
        "sources[0].maps.pm[1].address = 1: overlaps point 'voltage' (float32 at holding:0) "
        "with a different type or span (device 'm2')",
        "sources[0].devices[1].points[0]: no mid: the key mapping takes mid from each point; "
        "set it on the point or device",
        "sources[0].devices[2].map = 'meters': unknown register map (known: pm)",
    ]


def test_a_valid_config_resolves_inherited_settings_and_protocol_addresses() -> None:
    config = ModbusConfig.model_validate(
        {
            "type": "modbus",
            "name": "plant",
            "cid": 9,
            "interval": "5s",
            "poll_groups": {"fast": {"interval": "500ms"}},
            "connections": {"gw": {"transport": "rtu_over_tcp", "host": "10.0.0.5"}},
            "maps": {"pm": [{"name": "v", "address": 40001, "type": "float32", "moid": 1}]},
            "devices": [
                {
                    "name": "m1",
                    "connection": "gw",
                    "unit": 4,
                    "mid": 7,
                    "cid": 2,
                    "address_base": 1,
                    "order": "CDAB",
                    "map": "pm",
                    "points": [
                        {
                            "name": "e",
                            "address": 40003,
                            "type": "uint32",
                            "moid": 2,
                            "group": "fast",
                        }
                    ],
                }
            ],
        }
    )
    (device,) = resolve(config)
    assert device.connection_name == "gw"
    assert device.connection.port == 502
    assert [(p.name, p.address, p.order, p.cid, p.mid, p.moid, p.group) for p in device.points] == [
        ("v", 40000, "CDAB", 2, 7, 1, "default"),
        ("e", 40002, "CDAB", 2, 7, 2, "fast"),
    ]
    assert {name: group.interval for name, group in device.groups.items()} == {
        "default": 5.0,
        "fast": 0.5,
    }
