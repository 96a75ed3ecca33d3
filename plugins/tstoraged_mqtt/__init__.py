"""The ``mqtt`` source plugin: subscribe to a broker, map topics and payloads to records,
acknowledge messages only once their records are durable.

Registered through the ``tstoraged`` entry-point group like any third-party plugin; needs the
``mqtt`` extra (``pip install 'tstoraged[mqtt]'``, which brings paho-mqtt). Also contributes
the built-in message decoders (``json``, ``text``, ``raw``, ``struct``, ``csv``).
"""

from __future__ import annotations

from typing import Any

from tstoraged import SourceType, hookimpl
from tstoraged.decoding import DecoderType
from tstoraged_mqtt.config import MqttConfig
from tstoraged_mqtt.decoders import BUILTIN_DECODERS
from tstoraged_mqtt.source import MqttSource

__all__ = ["MqttConfig", "MqttSource", "tstoraged_message_decoders", "tstoraged_source_types"]


@hookimpl
def tstoraged_source_types() -> list[SourceType]:
    """The ``mqtt`` source type."""
    return [
        SourceType(
            "mqtt",
            MqttSource,
            MqttConfig,
            "Subscribe to MQTT 3.1.1/5 topics (shared subscriptions, TLS, persistent session); "
            "messages are acknowledged once their records are durable.",
        )
    ]


@hookimpl
def tstoraged_message_decoders() -> list[DecoderType[Any]]:
    """The built-in message decoders."""
    return list(BUILTIN_DECODERS)
