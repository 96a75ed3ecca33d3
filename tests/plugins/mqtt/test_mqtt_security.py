"""TLS to the broker and password auth: a wrong CA is refused clearly; the password never shows."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
from mqtt_harness import MQTT_ENV, PASSWORD, USER, Mosquitto, Publisher, daemon_toml, mqtt_daemon

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key, Record
from tstorage_server.testing import serve
from tstoraged.testing import DaemonProcess, wait_until


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


def tls_source(
    broker: Mosquitto,
    ca_file: Path,
    password: str = PASSWORD,
    *,
    port: int | None = None,
    client_cert: bool = False,
) -> str:
    # The password is a literal here on purpose: the worst case for leaking it.
    cert = (
        f', cert_file = "{broker.client_cert}", key_file = "{broker.client_key}"'
        if client_cert
        else ""
    )
    return f"""
[[sources]]
type = "mqtt"
name = "secure"
host = "127.0.0.1"
port = {port or broker.tls_port}
client_id = "secure-daemon"
username = "{USER}"
password = "{password}"
tls = {{ enabled = true, ca_file = "{ca_file}", server_hostname = "localhost"{cert} }}
reconnect = {{ initial = "100ms", max = "500ms" }}
key = {{ cid = 5, mid = 1, moid = 1 }}
payload = {{ format = "<d", fields = ["value"] }}

[[sources.subscriptions]]
topic = "secure/value"
decoder = {{ type = "text" }}
"""


def problem_of(daemon: DaemonProcess) -> str | None:
    problem: str | None = daemon.source_status("secure").get("problem")
    return problem


def every_output(daemon: DaemonProcess, config: Path) -> str:
    checked = subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **MQTT_ENV},
    )
    status = json.dumps(daemon.status())
    return "\n".join([*daemon.lines, checked.stdout, checked.stderr, status, status_view(daemon)])


def status_view(daemon: DaemonProcess) -> str:
    """What ``tstoraged status`` prints for the running daemon."""
    shown = subprocess.run(
        [sys.executable, "-m", "tstoraged.cli", "status", "--url", daemon.url],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **MQTT_ENV, "COLUMNS": "200"},
    )
    return shown.stdout + shown.stderr


def test_wrong_ca_is_refused_with_a_clear_error(tmp_path: Path, broker: Mosquitto) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with serve() as server:
        config = daemon_toml(tmp_path, server.address, tls_source(broker, other_ca), metrics=True)
        with mqtt_daemon(config) as daemon:
            problem = wait_until(lambda: problem_of(daemon), what="a connection problem")
            assert "certificate verification failed" in problem, problem
            assert f"127.0.0.1:{broker.tls_port}" in problem
            (event, *_) = daemon.events("mqtt_connect_failed")
            assert "certificate verification failed" in event["reason"]
            assert PASSWORD not in every_output(daemon, config)
            assert daemon.terminate() == 0


def test_tls_with_password_delivers_and_never_shows_the_password(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with serve() as server:
        config = daemon_toml(
            tmp_path, server.address, tls_source(broker, broker.ca_file), metrics=True
        )
        with mqtt_daemon(config) as daemon:
            daemon.wait_for_event("mqtt_connected")
            with Publisher(broker) as publisher:
                publisher.publish_all([("secure/value", "42.5")])

            def stored() -> list[Record[bytes]]:
                with Channel(server.host, server.port, BytesPayloadType()) as channel:
                    response = channel.get(Key(5, 1, 1, -(2**63), -(2**63)), Key.max())
                return [record for record in response.data if isinstance(record, Record)]

            (record,) = wait_until(stored, what="the record")
            assert record.value == struct.pack("<d", 42.5)
            shown = wait_until(
                lambda: "acknowledged" in (view := status_view(daemon)) and view,
                what="the source's details in `tstoraged status`",
            )
            assert "connected" in shown
            assert PASSWORD not in every_output(daemon, config)
            assert daemon.terminate() == 0


def test_wrong_password_is_refused_without_showing_it(tmp_path: Path, broker: Mosquitto) -> None:
    wrong = "wrong-Pa55-never-print"
    with serve() as server:
        config = daemon_toml(
            tmp_path, server.address, tls_source(broker, broker.ca_file, wrong), metrics=True
        )
        with mqtt_daemon(config) as daemon:
            problem = wait_until(lambda: problem_of(daemon), what="a connection problem")
            assert "refused the connection: Not authorized" in problem, problem
            assert f"check username '{USER}' and the password" in problem
            output = every_output(daemon, config)
            assert wrong not in output
            assert PASSWORD not in output
            assert daemon.terminate() == 0


def test_client_certificate_is_sent_when_configured(tmp_path: Path, broker: Mosquitto) -> None:
    """A listener requiring client certificates: refused without one, connected with one."""
    with serve() as server:
        without = tls_source(broker, broker.ca_file, port=broker.mtls_port)
        config = daemon_toml(tmp_path, server.address, without, metrics=True)
        with mqtt_daemon(config) as daemon:
            problem = wait_until(lambda: problem_of(daemon), what="a connection problem")
            assert f"cannot connect to broker 127.0.0.1:{broker.mtls_port}" in problem
            assert daemon.terminate() == 0
        with_cert = tls_source(broker, broker.ca_file, port=broker.mtls_port, client_cert=True)
        config = daemon_toml(tmp_path, server.address, with_cert, metrics=True)
        with mqtt_daemon(config) as daemon:
            daemon.wait_for_event("mqtt_connected")
            assert daemon.terminate() == 0
