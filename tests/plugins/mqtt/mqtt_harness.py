"""A real Mosquitto for tests: generated config, free loopback ports, TLS, password auth."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import trustme
from paho.mqtt.enums import CallbackAPIVersion

from tstoraged.testing import DaemonProcess, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MQTT_ENV = {"TSTORAGED_LOAD_PLUGINS": "codecs,mqtt"}
"""The suite loads only the core plugins by default; these tests add the mqtt plugin."""
USER = "ingest"
PASSWORD = "s3cret-Pa55-do-not-print"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Mosquitto:
    """``mosquitto -c <generated config>`` with a plain and a TLS listener, both password-only.

    Persistence is on (in ``directory``), so a restart keeps sessions and queued messages.
    """

    def __init__(self, directory: Path, **settings: Any) -> None:
        for tool in (MOSQUITTO, MOSQUITTO_PASSWD):
            if not os.access(tool, os.X_OK):
                raise RuntimeError(f"{tool} not found: apt-get install mosquitto (see README)")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port()
        self.mtls_port = free_port()
        """A TLS listener that requires a client certificate signed by :attr:`ca`."""
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
        cert.private_key_pem.write_to_path(str(directory / "server.key"))
        passwords = directory / "passwords"
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", "-c", str(passwords), USER, PASSWORD],
            check=True,
            capture_output=True,
        )
        lines = {
            "persistence": "true",
            "persistence_location": f"{directory}/",
            "autosave_interval": "1",
            "allow_anonymous": "false",
            "password_file": str(passwords),
            "max_queued_messages": "100000",
            "max_inflight_messages": "0",
            "log_type": "error",
            "log_dest": "stdout",
            # Started as root, mosquitto would switch to its own user, who cannot read tmp_path.
            **({"user": "root"} if os.geteuid() == 0 else {}),
            **{key: str(value) for key, value in settings.items()},
        }
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"per_listener_settings false\nlistener {self.port} 127.0.0.1\n"
            + "".join(f"{key} {value}\n" for key, value in lines.items())
            + f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {self.ca_file}\n"
            f"certfile {directory / 'server.pem'}\nkeyfile {directory / 'server.key'}\n"
            f"listener {self.mtls_port} 127.0.0.1\n"
            f"cafile {self.ca_file}\nrequire_certificate true\n"
            f"certfile {directory / 'server.pem'}\nkeyfile {directory / 'server.key'}\n"
        )
        client = self.ca.issue_cert("tstoraged-client")
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        process = self.process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

        def accepting() -> bool:
            if process.poll() is not None:
                raise RuntimeError("mosquitto exited:\n" + "\n".join(self.output))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                return False
            return True

        wait_until(accepting, 15, "mosquitto to listen")
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: the broker saves its persistence file)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same persistence."""
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)


class Publisher:
    """A paho publisher with its own network thread; :meth:`publish` waits for the broker."""

    def __init__(self, broker: Mosquitto, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=False,
        )
        self.client.username_pw_set(USER, PASSWORD)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        self.connected = threading.Event()
        self.acknowledged = 0
        """QoS 1/2 messages the broker has confirmed (it resends across reconnects)."""
        self.connects = 0
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self.connected.wait(15):
            raise RuntimeError("publisher did not connect")

    def _on_connect(self, *_: Any) -> None:
        self.connects += 1
        self.connected.set()

    def _on_publish(self, *_: Any) -> None:
        self.acknowledged += 1

    def wait_acknowledged(self, count: int, timeout: float = 60) -> None:
        """Wait until the broker has confirmed ``count`` QoS 1/2 messages in all."""
        wait_until(lambda: self.acknowledged >= count, timeout, f"{count} messages at the broker")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> paho.MQTTMessageInfo:
        """Queue one message (paho resends QoS 1/2 ones across reconnects)."""
        return self.client.publish(topic, payload, qos=qos)

    def publish_all(
        self, messages: list[tuple[str, bytes | str]], qos: int = 1, timeout: float = 60
    ) -> None:
        """Publish and wait until the broker has every QoS > 0 message."""
        before = self.acknowledged
        for topic, payload in messages:
            self.publish(topic, payload, qos)
        if qos:
            self.wait_acknowledged(before + len(messages), timeout)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def broker_section(broker: Mosquitto, **overrides: Any) -> str:
    """The connection keys of an ``mqtt`` source for ``broker`` (password from a file)."""
    password_file = broker.directory / "client-password"
    if not password_file.exists():
        password_file.write_text(PASSWORD + "\n")
        os.chmod(password_file, 0o600)
    values: dict[str, Any] = {
        "host": '"127.0.0.1"',
        "port": broker.port,
        "username": f'"{USER}"',
        "password": f'{{ file = "{password_file}" }}',
        "reconnect": '{ initial = "100ms", max = "1s" }',
        **overrides,
    }
    return "".join(f"{key} = {value}\n" for key, value in values.items())


def daemon_toml(
    tmp_path: Path,
    tstorage: tuple[str, int],
    sources: str,
    *,
    spool: bool = False,
    write_mode: str = "put",
    metrics: bool = False,
) -> Path:
    """A daemon config writing to ``tstorage`` with ``sources`` (``[[sources]]`` tables)."""
    path = tmp_path / "tstoraged.toml"
    metrics_table = 'enabled = true\nlisten = "127.0.0.1:0"' if metrics else "enabled = false"
    path.write_text(
        f"""
[tstorage]
host = "{tstorage[0]}"
port = {tstorage[1]}
write_mode = "{write_mode}"

[batch]
flush_interval = "50ms"

[retry]
initial_backoff = "100ms"
max_backoff = "500ms"

[spool]
enabled = {str(spool).lower()}

[metrics]
{metrics_table}

[log]
level = "info"

[daemon]
state_dir = "{tmp_path / "state"}"

{sources}
"""
    )
    return path


def mqtt_daemon(config: Path) -> DaemonProcess:
    """``tstoraged run -c config`` as a process, with the mqtt plugin loaded (not started)."""
    return DaemonProcess(config, env=MQTT_ENV)
