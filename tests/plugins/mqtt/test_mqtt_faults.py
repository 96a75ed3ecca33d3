"""The mqtt source under faults, with real processes: kill -9, broker restarts, TStorage down,
two daemons sharing a subscription, a reload with a changed topic list."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from mqtt_harness import Mosquitto, Publisher, broker_section, daemon_toml, mqtt_daemon

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_server.testing import ServerProcess, serve
from tstoraged.testing import DaemonProcess, wait_until

CID = 3
T0_MS = 1_700_000_000_000


class StreamPublisher:
    """Publishes ``{"seq": n, "ts": T0 + n}`` on ``f/<n % 4>`` at a steady pace (QoS 1)."""

    def __init__(self, broker: Mosquitto, per_burst: int = 20, pause: float = 0.01) -> None:
        self.publisher = Publisher(broker, client_id="stream-publisher")
        self.sent = 0
        self._stop = threading.Event()
        self._per_burst = per_burst
        self._pause = pause
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(self._per_burst):
                seq = self.sent
                payload = json.dumps({"seq": seq, "ts": T0_MS + seq})
                self.publisher.publish(f"f/{seq % 4}", payload, qos=1)
                self.sent += 1
            self._stop.wait(self._pause)  # pacing of the load, not synchronization

    def __enter__(self) -> StreamPublisher:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop publishing; wait until the broker has every message; return how many."""
        self._stop.set()
        self._thread.join()
        self.publisher.wait_acknowledged(self.sent)
        self.publisher.close()
        return self.sent

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()


def mqtt_source(broker: Mosquitto, *, name: str = "stream", **settings: Any) -> str:
    values = {"client_id": f'"{name}-daemon"', "max_in_flight": 200, **settings}
    topic = values.pop("topic", '"f/{mid}"')
    return f"""
[[sources]]
type = "mqtt"
name = "{name}"
{broker_section(broker, **values)}
key = {{ cid = {CID}, mid = "{{mid}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<q", fields = ["seq"] }}

[[sources.subscriptions]]
topic = {topic}
qos = 1
"""


def stored(port: int) -> list[Record[bytes]]:
    with Channel("127.0.0.1", port, BytesPayloadType()) as channel:
        response = channel.get(Key(CID, -(2**63), -(2**31), -(2**63), -(2**63)), Key.max())
    assert response, response
    return [record for record in response.data if isinstance(record, Record)]


def seqs(port: int) -> Counter[int]:
    return Counter(int.from_bytes(record.value, "little", signed=True) for record in stored(port))


def all_stored(port: int, count: int) -> Counter[int] | None:
    found = seqs(port)
    return found if set(found) >= set(range(count)) else None


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.mark.slow
@pytest.mark.parametrize(("write_mode", "spool"), [("put", False), ("puta", True)])
def test_kill9_with_qos1_in_flight_loses_nothing(
    tmp_path: Path, broker: Mosquitto, write_mode: str, spool: bool, record_property: Any
) -> None:
    kills = 3
    retried = 0  # batches the writer sent again after a failed or unanswered PUT

    def count_retries(daemon: DaemonProcess) -> int:
        return len(daemon.events("write_retry"))

    with serve() as server:
        config = daemon_toml(
            tmp_path, server.address, mqtt_source(broker), spool=spool, write_mode=write_mode
        )
        daemon = mqtt_daemon(config).start()
        try:
            daemon.wait_for_event("mqtt_connected")  # subscribed: the session keeps the rest
            with StreamPublisher(broker) as stream:
                for kill in range(kills):
                    daemon.wait_for_event("mqtt_connected")
                    floor = len(stored(server.port))
                    wait_until(
                        lambda floor=floor: len(stored(server.port)) > floor + 100,
                        what=f"records to flow before kill {kill + 1}",
                    )
                    daemon.kill()
                    retried += count_retries(daemon)
                    daemon.start()
                published = stream.stop()
            found = wait_until(lambda: all_stored(server.port, published), 60, "every message")
            skipped = sum(e.get("repeats_skipped", 0) for e in daemon.events("mqtt_source_stopped"))
        finally:
            daemon.terminate()
            retried += count_retries(daemon)
    repeated = sum(found.values()) - len(found)
    record_property("repeated", repeated)
    record_property("repeats_skipped", skipped)
    if write_mode == "puta":
        # Deterministic key: repeats the broker sends are recognised (ack journal), the
        # spool replays with the same acq, so nothing is stored twice.
        assert repeated == 0, "puta with a deterministic key must not repeat a record"
    else:
        # put: a kill repeats at most what was durable but not acknowledged (max_in_flight),
        # and a PUT retried after its answer was lost is stored again (docs/delivery.md).
        assert repeated <= kills * 200 + retried * 10_000


@pytest.mark.slow
def test_broker_restart_mid_stream_reconnects_and_loses_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with serve() as server:
        config = daemon_toml(tmp_path, server.address, mqtt_source(broker))
        with mqtt_daemon(config) as daemon:
            daemon.wait_for_event("mqtt_connected")
            with StreamPublisher(broker) as stream:
                wait_until(lambda: len(stored(server.port)) > 200, what="records to flow")
                broker.restart()
                wait_until(
                    lambda: len(daemon.events("mqtt_connected")) >= 2,
                    what="the daemon to reconnect",
                )
                floor = len(stored(server.port))
                wait_until(lambda: len(stored(server.port)) > floor + 200, what="flow to resume")
                published = stream.stop()
            wait_until(lambda: all_stored(server.port, published), 60, "every message")
            assert daemon.events("mqtt_connection_lost")
            assert daemon.terminate() == 0


@pytest.mark.slow
def test_tstorage_down_is_backpressure_on_the_broker(tmp_path: Path, broker: Mosquitto) -> None:
    """In flight stops at the bound, the broker keeps the rest, memory stays flat; all arrive."""
    server = ServerProcess(tmp_path / "tstorage").start()
    try:
        config = daemon_toml(
            tmp_path, (server.host, server.port), mqtt_source(broker), metrics=True
        )
        with mqtt_daemon(config) as daemon:
            daemon.wait_for_event("mqtt_connected")
            server.kill()
            with Publisher(broker) as publisher:
                total = 3000
                for seq in range(total):
                    payload = json.dumps({"seq": seq, "ts": T0_MS + seq})
                    publisher.publish(f"f/{seq % 4}", payload, qos=1)

                def details() -> dict[str, Any]:
                    found: dict[str, Any] = daemon.source_status("stream").get("details", {})
                    return found

                wait_until(lambda: details().get("in_flight") == 200, what="in flight at the bound")
                process = psutil.Process(daemon.process.pid if daemon.process else 0)
                rss = []
                for _ in range(5):
                    rss.append(process.memory_info().rss)
                    assert details()["in_flight"] <= 200
                    threading.Event().wait(0.2)  # sampling period of the memory readings
                assert max(rss) - min(rss) < 8 * 2**20
                assert details()["received"] < total  # the rest waits on the broker
                server.start()  # same port
                wait_until(lambda: all_stored(server.port, total), 60, "every message")
            assert daemon.terminate() == 0
    finally:
        server.kill()


@pytest.mark.slow
def test_two_daemons_share_one_subscription(tmp_path: Path, broker: Mosquitto) -> None:
    with serve() as server:
        daemons = []
        for index in range(2):
            directory = tmp_path / f"daemon{index}"
            directory.mkdir()
            source = mqtt_source(
                broker, client_id=f'"shared-{index}"', topic='"$share/ingest/f/{mid}"'
            )
            daemons.append(mqtt_daemon(daemon_toml(directory, server.address, source)).start())
        try:
            for daemon in daemons:
                daemon.wait_for_event("mqtt_connected")
            with Publisher(broker) as publisher:
                total = 2000
                messages = [
                    (f"f/{seq % 4}", json.dumps({"seq": seq, "ts": T0_MS + seq}))
                    for seq in range(total)
                ]
                publisher.publish_all(messages, qos=1)
            found = wait_until(lambda: all_stored(server.port, total), 60, "every message")
            assert sum(found.values()) == total  # each message stored once
            for daemon in daemons:
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait() == 0
            received = [_received(daemon) for daemon in daemons]
            assert sum(received) == total, received
            assert min(received) > total // 10  # both took a real part of the load
        finally:
            for daemon in daemons:
                daemon.kill()


def _received(daemon: DaemonProcess) -> int:
    """Messages the daemon's mqtt source received, from its stop log."""
    events = daemon.events("mqtt_source_stopped")
    assert events, daemon.lines[-20:]
    return int(events[-1]["received"])


@pytest.mark.slow
def test_topic_list_change_takes_effect_after_reload_and_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A removed filter is unsubscribed, though the persistent session restores it."""
    g_table = '\n[[sources.subscriptions]]\ntopic = "g/{mid}"\nqos = 1\n'

    def publish(publisher: Publisher, *items: tuple[str, int]) -> None:
        publisher.publish_all(
            [(topic, json.dumps({"seq": seq, "ts": T0_MS + seq})) for topic, seq in items]
        )

    with serve() as server, Publisher(broker) as publisher:
        config = daemon_toml(tmp_path, server.address, mqtt_source(broker) + g_table)
        with mqtt_daemon(config) as daemon:
            daemon.wait_for_event("mqtt_connected")
            publish(publisher, ("f/1", 0), ("g/2", 1))
            wait_until(lambda: set(seqs(server.port)) == {0, 1}, what="both topics")
            config.write_text(config.read_text().replace(g_table, ""))
            daemon.send_signal(signal.SIGHUP)
            wait_until(lambda: daemon.events("mqtt_unsubscribed"), what="g/+ unsubscribed")
            # In order: a message on g/+ would arrive before the last one on f/+.
            publish(publisher, ("f/1", 2), ("g/2", 3), ("f/1", 4))
            wait_until(lambda: 4 in seqs(server.port), what="f/+ still flowing")
            assert daemon.terminate() == 0
        assert set(seqs(server.port)) == {0, 1, 2, 4}
        # While the daemon is stopped, an older config's filter comes back into the session
        # (and into the filters the daemon remembers); started again, the daemon removes it.
        _subscribe_in_session(broker, "stream-daemon", tmp_path / "state" / "sources" / "stream")
        with mqtt_daemon(config) as daemon:
            wait_until(lambda: daemon.events("mqtt_unsubscribed"), what="g/+ unsubscribed")
            publish(publisher, ("f/1", 5), ("g/2", 6), ("f/1", 7))
            wait_until(lambda: 7 in seqs(server.port), what="f/+ flowing after restart")
            assert daemon.terminate() == 0
        assert set(seqs(server.port)) == {0, 1, 2, 4, 5, 7}


def _subscribe_in_session(broker: Mosquitto, client_id: str, state_dir: Path) -> None:
    """Add g/+ to the daemon's persistent session and to its remembered filters."""
    import paho.mqtt.client as paho
    from mqtt_harness import PASSWORD, USER
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.username_pw_set(USER, PASSWORD)
    client.on_subscribe = lambda *_: done.set()
    properties = paho.Properties(paho.PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 86400
    client.connect("127.0.0.1", broker.port, clean_start=False, properties=properties)
    client.loop_start()
    client.subscribe("g/+", qos=1)
    assert done.wait(10)
    client.disconnect()
    client.loop_stop()
    state = json.loads((state_dir / "subscriptions.json").read_text())
    state["filters"] = sorted({*state["filters"], "g/+"})
    (state_dir / "subscriptions.json").write_text(json.dumps(state))
