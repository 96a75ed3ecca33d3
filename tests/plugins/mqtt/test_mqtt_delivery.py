"""MQTT source end to end in one process: Mosquitto -> the daemon's pipeline -> TStorage server."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mqtt_harness import Mosquitto, Publisher, broker_section, daemon_toml

from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_client.timestamp import OFFSET_NS
from tstorage_server.testing import RunningServer, serve_async
from tstoraged.config.loader import load_config
from tstoraged.plugins import PluginManager
from tstoraged.runtime.app import Daemon

ENV = {"TSTORAGED_LOAD_PLUGINS": "codecs,mqtt"}
DEADLINE_S = 30.0
T0_MS = 1_700_000_000_000


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


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


async def eventually(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def stored(server: RunningServer, cid: int = 1) -> list[Record[bytes]]:
    channel: AsyncChannel[bytes] = AsyncChannel(server.host, server.port, BytesPayloadType())
    async with channel:
        response = await channel.get(Key(cid, -(2**63), -(2**31), -(2**63), -(2**63)), Key.max())
    assert response, response
    return [record for record in response.data if isinstance(record, Record)]


def source_details(daemon: Daemon, name: str) -> dict[str, Any]:
    details: dict[str, Any] = daemon.metrics.snapshot()["sources"].get(name, {}).get("details", {})
    return details


async def connected(daemon: Daemon, name: str) -> None:
    await eventually(
        lambda: source_details(daemon, name).get("connection") == "connected",
        f"source {name} to connect",
    )


def ms(record: Record[bytes]) -> int:
    return (record.key.cap + OFFSET_NS) // 1_000_000


async def test_qos_0_1_2_delivery_and_mapping(tmp_path: Path, broker: Mosquitto) -> None:
    """Template segments, JSON with several readings, text and struct payloads, each QoS."""
    async with serve_async() as server:
        sources = f"""
[[sources]]
type = "mqtt"
name = "plant"
client_id = "delivery-test"
{broker_section(broker)}
key = {{ cid = 1, mid = "{{mid}}", moid = {{ field = "name", lookup = "channels", default = 0 }} }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["value"] }}
lookups = {{ channels = {{ temp = 1, hum = 2 }} }}

[[sources.subscriptions]]
topic = "plant/{{site}}/{{mid}}/json"
qos = 0
decoder = {{ type = "json", fields = {{ ts = "t" }}, readings = "values" }}

[[sources.subscriptions]]
topic = "plant/{{site}}/{{mid}}/text/{{ts}}"
qos = 1
decoder = {{ type = "text" }}

[[sources.subscriptions]]
topic = "plant/+/{{mid}}/bin"
qos = 2
decoder = {{ type = "struct", format = "<Qd", fields = ["ts", "value"] }}
"""
        config = daemon_toml(tmp_path, server.address, sources)
        async with running_daemon(config) as daemon:
            await connected(daemon, "plant")
            with Publisher(broker) as publisher:
                json_message = json.dumps({"t": T0_MS, "values": {"temp": 21.5, "hum": 40.0}})
                publisher.publish_all([("plant/a/7/json", json_message)], qos=0)
                publisher.publish_all([(f"plant/a/8/text/{T0_MS + 1}", "3.25")], qos=1)
                packed = struct.pack("<Qd", T0_MS + 2, -1.5)
                publisher.publish_all([("plant/b/9/bin", packed)], qos=2)
                records = await eventually(
                    lambda: _at_least(stored(server), 4), "4 records in TStorage"
                )
            got = sorted(
                (r.key.mid, r.key.moid, ms(r), struct.unpack("<d", r.value)[0]) for r in records
            )
            assert got == [
                (7, 1, T0_MS, 21.5),
                (7, 2, T0_MS, 40.0),
                (8, 0, T0_MS + 1, 3.25),
                (9, 0, T0_MS + 2, -1.5),
            ]
            details = await eventually(
                lambda: (d := source_details(daemon, "plant")).get("acknowledged") == 2 and d,
                "the QoS 1 and 2 messages to be acknowledged",
            )
            assert details["received"] == 3
            assert details["mapped"] == 4
            assert details["in_flight"] == 0


async def _at_least(records: Any, count: int) -> list[Record[bytes]] | None:
    found: list[Record[bytes]] = await records
    return found if len(found) >= count else None


async def test_cap_from_receive_time_and_the_per_source_metrics(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Without a cap field the cap is the receive time; the source's Prometheus families."""
    async with serve_async() as server:
        sources = f"""
[[sources]]
type = "mqtt"
name = "recv"
client_id = "receive-time-test"
{broker_section(broker)}
key = {{ cid = 1, mid = 1, moid = 1 }}
payload = {{ format = "<d", fields = ["value"] }}

[[sources.subscriptions]]
topic = "r/value"
decoder = {{ type = "text" }}
"""
        config = daemon_toml(tmp_path, server.address, sources)
        async with running_daemon(config) as daemon:
            await connected(daemon, "recv")
            before_ns = time.time_ns()
            with Publisher(broker) as publisher:
                publisher.publish_all([("r/value", "1.5"), ("r/value", "warm")], qos=1)
                (record,) = await eventually(lambda: _at_least(stored(server), 1), "the record")
                await eventually(
                    lambda: source_details(daemon, "recv").get("acknowledged") == 2,
                    "both messages acknowledged",
                )
            after_ns = time.time_ns()
            assert struct.unpack("<d", record.value) == (1.5,)
            assert before_ns <= record.key.cap + OFFSET_NS <= after_ns

            def sample(name: str) -> float | None:
                value = daemon.metrics.registry.get_sample_value(name, {"source": "recv"})
                return None if value is None else float(value)

            assert sample("tstoraged_mqtt_messages_received_total") == 2
            assert sample("tstoraged_mqtt_records_mapped_total") == 1
            assert sample("tstoraged_mqtt_messages_rejected_total") == 1
            assert sample("tstoraged_mqtt_messages_acknowledged_total") == 2
            assert sample("tstoraged_mqtt_messages_in_flight") == 0
            assert sample("tstoraged_mqtt_connected") == 1
            assert sample("tstoraged_mqtt_connections_total") == 1
            last = sample("tstoraged_mqtt_last_message_timestamp_seconds")
            assert last is not None
            assert before_ns / 1e9 <= last <= after_ns / 1e9


async def test_malformed_messages_dead_lettered_acked_and_stream_continues(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with serve_async() as server:
        sources = f"""
[[sources]]
type = "mqtt"
name = "sensors"
client_id = "malformed-test"
{broker_section(broker)}
key = {{ cid = 1, mid = "{{mid}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["value"] }}

[[sources.subscriptions]]
topic = "s/{{mid}}"
qos = 1
"""
        config = daemon_toml(tmp_path, server.address, sources)
        garbage = bytes(range(256)) * 4096  # 1 MiB, not JSON
        bad = [
            ("s/1", b'{"ts": 1, "value": '),  # truncated JSON
            ("s/2", json.dumps({"ts": T0_MS, "value": "warm"}).encode()),  # wrong type
            ("s/3", garbage),
            ("s/4", json.dumps({"ts": T0_MS, "value": 1.0}).encode()),  # good, after the bad ones
        ]
        async with running_daemon(config) as daemon:
            await connected(daemon, "sensors")
            with Publisher(broker) as publisher:
                publisher.publish_all(list(bad), qos=1)
                records = await eventually(lambda: _at_least(stored(server), 1), "the good record")
                assert [(r.key.mid, struct.unpack("<d", r.value)[0]) for r in records] == [(4, 1.0)]
                details = await eventually(
                    lambda: (d := source_details(daemon, "sensors")).get("acknowledged") == 4 and d,
                    "all four messages acknowledged, the malformed ones too",
                )
                assert details["rejected"] == 3
                assert details["in_flight"] == 0
        letters = [json.loads(line) for line in _dead_letter_lines(tmp_path / "state")]
        by_origin = {letter["origin"]: letter for letter in letters}
        assert set(by_origin) == {"s/1", "s/2", "s/3"}
        assert "not JSON" in by_origin["s/1"]["reason"]
        assert "value" in by_origin["s/2"]["reason"]
        assert base64.b64decode(by_origin["s/3"]["raw_base64"]) == garbage
        # Acknowledged means the broker does not send them again to the same session.
        async with running_daemon(config) as daemon:
            await connected(daemon, "sensors")
            await asyncio.sleep(0.5)  # a redelivery would arrive right after CONNACK
            assert source_details(daemon, "sensors")["received"] == 0


def _dead_letter_lines(state_dir: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(state_dir.rglob("*dead*letter*")):
        if path.is_file():
            lines += [line for line in path.read_text().splitlines() if line.strip()]
    return lines


async def test_silent_subscription_is_reported_and_reconnected(
    tmp_path: Path, broker: Mosquitto
) -> None:
    async with serve_async() as server:
        sources = f"""
[[sources]]
type = "mqtt"
name = "quiet"
client_id = "liveness-test"
{broker_section(broker)}
key = {{ cid = 1, mid = 1, moid = 1 }}
payload = {{ format = "<d", fields = ["value"] }}

[[sources.subscriptions]]
topic = "quiet/value"
decoder = {{ type = "text" }}
expect_every = "300ms"
"""
        config = daemon_toml(tmp_path, server.address, sources)
        async with running_daemon(config) as daemon:
            problem = await eventually(
                lambda: daemon.metrics.source_problems().get("quiet"), "a silence problem"
            )
            assert "no messages on quiet/value" in problem
            await eventually(
                lambda: source_details(daemon, "quiet").get("connects", 0) >= 2,
                "a reconnection after the silence",
            )
            with Publisher(broker) as publisher:
                # Keep publishing until the problem clears: data flows again.
                async def cleared() -> bool:
                    publisher.publish("quiet/value", "1.5", qos=1)
                    return daemon.metrics.source_problems().get("quiet") is None

                await eventually(cleared, "the problem to clear once data flows")


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_protocols_and_publishes_with_properties(
    tmp_path: Path, broker: Mosquitto, protocol: str
) -> None:
    """MQTT 3.1.1 and 5 sessions; a PUBLISH with MQTT 5 properties takes paho's own decoding."""
    import paho.mqtt.client as paho
    from mqtt_harness import PASSWORD, USER
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    async with serve_async() as server:
        sources = f"""
[[sources]]
type = "mqtt"
name = "proto"
protocol = "{protocol}"
client_id = "protocol-test"
{broker_section(broker)}
key = {{ cid = 1, mid = "{{mid}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["value"] }}

[[sources.subscriptions]]
topic = "p/{{mid}}"
"""
        config = daemon_toml(tmp_path, server.address, sources)
        async with running_daemon(config) as daemon:
            await connected(daemon, "proto")
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id="v5-publisher", protocol=paho.MQTTv5
            )
            client.username_pw_set(USER, PASSWORD)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            try:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = ("line", "3")
                properties.ContentType = "application/json"
                plain = json.dumps({"ts": T0_MS, "value": 1.0})
                with_properties = json.dumps({"ts": T0_MS + 1, "value": 2.0})
                client.publish("p/1", plain, qos=1).wait_for_publish(10)
                client.publish("p/2", with_properties, qos=1, properties=properties)
                records = await eventually(lambda: _at_least(stored(server), 2), "both records")
            finally:
                client.disconnect()
                client.loop_stop()
            assert sorted((r.key.mid, struct.unpack("<d", r.value)[0]) for r in records) == [
                (1, 1.0),
                (2, 2.0),
            ]
            await eventually(
                lambda: source_details(daemon, "proto").get("acknowledged") == 2, "both acked"
            )
