"""The ``modbus`` source plugin: poll Modbus TCP, RTU and RTU-over-TCP devices on time.

Registered through the ``tstoraged`` entry-point group like every built-in. It contributes
the ``modbus`` source type, the ``modbus`` payload codec (a point's value as float64, int64
or text) and the ``tstoraged modbus probe`` command. pymodbus and pyserial come with the
``modbus`` extra (``pip install 'tstoraged[modbus]'``); without them the plugin is listed as
unavailable with that hint, and the daemon runs its other sources.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from tstoraged import SourceType, hookimpl
from tstoraged.cli import Subcommand
from tstoraged.mapping.codecs import CodecType

for _required in ("pymodbus", "serial"):
    # Checked without importing them: pymodbus is imported only when a source or the probe
    # runs, so that `tstoraged --help` stays quick.
    if importlib.util.find_spec(_required) is None:
        raise ModuleNotFoundError(f"No module named {_required!r}", name=_required)

from tstoraged_modbus.codec import MODBUS_CODEC  # noqa: E402
from tstoraged_modbus.config import ModbusConfig  # noqa: E402
from tstoraged_modbus.source import ModbusSource  # noqa: E402

__all__ = [
    "ModbusConfig",
    "ModbusSource",
    "tstoraged_commands",
    "tstoraged_payload_codecs",
    "tstoraged_source_types",
]


@hookimpl
def tstoraged_source_types() -> list[SourceType]:
    """The ``modbus`` source type."""
    return [
        SourceType(
            "modbus",
            ModbusSource,
            ModbusConfig,
            "Poll Modbus TCP, RTU (serial) and RTU-over-TCP devices on clock-aligned "
            "schedules, with coalesced reads, word orders and per-device failure isolation.",
        )
    ]


@hookimpl
def tstoraged_payload_codecs() -> list[CodecType[Any]]:
    """The ``modbus`` payload codec."""
    return [MODBUS_CODEC]


@hookimpl
def tstoraged_commands() -> list[Subcommand]:
    """``tstoraged modbus probe``."""
    from tstoraged_modbus.probe import COMMAND

    return [COMMAND]
