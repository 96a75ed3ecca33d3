"""MQTT source throughput: a publisher process -> Mosquitto -> the daemon -> tstorage-server.

Single-reading JSON messages (``{"ts": <ms>, "v": <float>}`` on ``bench/<meter>``, 100 meters)
are published as fast as a raw-socket publisher process can (QoS 0, or QoS 1 with a window
of unacknowledged messages), through a Mosquitto started here, to:

* ``bare paho``: a stock paho-mqtt subscriber doing nothing with the messages (the ceiling of
  a Python client on this machine, in this run);
* the daemon (in its own process: the ``mqtt`` source -> mapping -> pipeline ->
  ``AsyncChannel.put`` -> ``tstorage-server --memory``): QoS 0; QoS 1 with acknowledgement
  after durability, spool off (TStorage OK) and spool on (fsync per batch).

Sustained messages/s count from the first to the last message stored (start-up excluded);
CPU and peak RSS are the daemon process's own.

    .venv/bin/python benchmarks/bench_mqtt.py --messages 300000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

METERS = 100
T0_MS = 1_700_000_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the publisher (a raw MQTT 3.1.1 client: the load generator must not be the bottleneck) --


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: bytes, payload: bytes, qos: int, mid: int) -> bytes:
    variable = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body = variable + payload
    return bytes([0x30 | (qos << 1)]) + _remaining_length(len(body)) + body


def publish(port: int, messages: int, qos: int, window: int = 20_000) -> None:
    """Connect, publish ``messages`` as fast as possible, wait for every PUBACK (QoS 1)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = b"bench-publisher"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"  # 3.1.1, clean session, keepalive 60 s
    body = variable + struct.pack("!H", len(client_id)) + client_id
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    if sock.recv(4)[:2] != b"\x20\x02":
        raise RuntimeError("no CONNACK")
    acked = 0
    sent = 0
    chunk = 2000
    pending = b""
    while sent < messages:
        while qos and sent - acked >= window:
            data = pending + sock.recv(65536)
            acked += len(data) // 4
            pending = data[len(data) - len(data) % 4 :]
        count = min(chunk, messages - sent)
        packets = []
        for seq in range(sent, sent + count):
            payload = b'{"ts":%d,"v":%d.25}' % (T0_MS + seq, seq % 1000)
            topic = b"bench/%d" % (seq % METERS)
            packets.append(_publish_packet(topic, payload, qos, seq % 65535 + 1))
        sock.sendall(b"".join(packets))
        sent += count
    while qos and acked < messages:
        data = pending + sock.recv(65536)
        acked += len(data) // 4
        pending = data[len(data) - len(data) % 4 :]
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()


def start_publisher(port: int, messages: int, qos: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--publish", str(port), str(messages), str(qos)]
    )


# -- the bare paho subscriber ------------------------------------------------------------------


def bare_paho(port: int, messages: int, qos: int) -> dict[str, float]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    state = {"got": 0, "first": 0.0, "last": 0.0}

    def on_message(client: Any, _userdata: Any, _message: Any) -> None:
        now = time.perf_counter()
        if not state["got"]:
            state["first"] = now
        state["got"] += 1
        state["last"] = now
        if state["got"] >= messages:
            client.disconnect()

    publisher: list[subprocess.Popen[bytes]] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = lambda *_: publisher.append(start_publisher(port, messages, qos))
    client.connect("127.0.0.1", port)
    client.subscribe("bench/#", qos)
    cpu0 = time.process_time()
    client.loop_forever()
    cpu = time.process_time() - cpu0
    publisher[0].wait()
    elapsed = state["last"] - state["first"]
    return {
        "messages": state["got"],
        "sustained_msg_s": (state["got"] - 1) / elapsed,
        "cpu_s_per_100k": cpu / state["got"] * 1e5,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# -- the daemon --------------------------------------------------------------------------------


def daemon_config(state: Path, broker: int, tstorage: int, qos: int, spool: bool) -> str:
    spool_section = '[spool]\nenabled = true\nfsync = "batch"\n' if spool else ""
    return f"""
[tstorage]
port = {tstorage}
[batch]
flush_interval = "100ms"
[metrics]
enabled = false
[log]
level = "warning"
[daemon]
state_dir = "{state}"
{spool_section}
[[sources]]
type = "mqtt"
name = "bench"
host = "127.0.0.1"
port = {broker}
client_id = "bench-daemon"
clean_start = true
key = {{ cid = 1, mid = "{{meter}}", moid = 1 }}
cap = {{ field = "ts", unit = "ms" }}
payload = {{ format = "<d", fields = ["v"] }}
[[sources.subscriptions]]
topic = "bench/{{meter}}"
qos = {qos}
"""


async def run_daemon(config: Path, broker: int, messages: int, qos: int) -> dict[str, float]:
    from tstoraged.config import load_config
    from tstoraged.plugins import PluginManager
    from tstoraged.runtime.app import Daemon

    plugins = PluginManager.from_entry_points(os.environ)
    daemon = Daemon(load_config(config, plugins=plugins), plugins, configure_logs=False)
    task = asyncio.create_task(daemon.run())

    def source() -> dict[str, Any]:
        found: dict[str, Any] = daemon.metrics.snapshot()["sources"].get("bench", {})
        return found

    deadline = time.monotonic() + 30
    while source().get("details", {}).get("connection") != "connected":
        assert time.monotonic() < deadline, "the source did not connect"
        await asyncio.sleep(0.01)  # polling the daemon's own status, as an operator would
    publisher = start_publisher(broker, messages, qos)
    cpu0 = time.process_time()
    first = None
    written = 0
    deadline = time.monotonic() + 600
    while written < messages and time.monotonic() < deadline:
        written = source().get("written", 0)
        now = time.perf_counter()
        if written and first is None:
            first = (now, written, time.process_time())
        await asyncio.sleep(0.005)
    last = time.perf_counter()
    cpu = time.process_time()
    details = source().get("details", {})
    daemon.request_stop()
    await task
    await asyncio.to_thread(publisher.wait)
    assert first is not None, "nothing was written"
    return {
        "messages": written,
        "sustained_msg_s": (written - first[1]) / (last - first[0]),
        "cpu_s_per_100k": (cpu - first[2]) / max(1, written - first[1]) * 1e5,
        "cpu_utilisation": (cpu - first[2]) / (last - first[0]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rejected": details.get("rejected", 0),
        "cpu_total_s": cpu - cpu0,
    }


# -- orchestration -----------------------------------------------------------------------------


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = directory / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "max_inflight_messages 0\nlog_type error\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(config)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def child(args: list[str]) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--only", choices=("bare", "qos0", "qos1", "qos1-spool"), action="append")
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the daemon runs into FILE.<name>"
    )
    parser.add_argument("--publish", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--daemon", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish(*args.publish)
        return
    if args.bare:
        print(json.dumps(bare_paho(*args.bare)))
        return
    if args.daemon:
        config, broker, messages, qos, profile = args.daemon
        run = run_daemon(Path(config), int(broker), int(messages), int(qos))
        if profile != "-":
            import cProfile

            with cProfile.Profile() as profiler:
                result = asyncio.run(run)
            profiler.dump_stats(profile)
        else:
            result = asyncio.run(run)
        print(json.dumps(result))
        return

    from tstorage_server.testing import ServerProcess

    wanted = args.only or ["bare", "qos0", "qos1", "qos1-spool"]
    print(f"cores: {os.cpu_count()}  load average: {os.getloadavg()}  messages: {args.messages}")
    with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
        broker, port = start_broker(Path(tmp))
        broker_cpu = psutil.Process(broker.pid)
        try:
            for name in wanted:
                before = sum(broker_cpu.cpu_times()[:2])
                if name == "bare":
                    for qos in (0, 1):
                        before = sum(broker_cpu.cpu_times()[:2])
                        result = child(["--bare", str(port), str(args.messages), str(qos)])
                        result["broker_cpu_s"] = sum(broker_cpu.cpu_times()[:2]) - before
                        report(f"bare paho subscriber, QoS {qos}", result)
                    continue
                qos = 0 if name == "qos0" else 1
                spool = name == "qos1-spool"
                state = Path(tmp) / name
                state.mkdir()
                config = state / "tstoraged.toml"
                config.write_text(daemon_config(state, port, server.port, qos, spool))
                profile = f"{args.profile}.{name}" if args.profile else "-"
                result = child(
                    ["--daemon", str(config), str(port), str(args.messages), str(qos), profile]
                )
                result["broker_cpu_s"] = sum(broker_cpu.cpu_times()[:2]) - before
                report(f"daemon, QoS {qos}, spool {'on' if spool else 'off'}", result)
        finally:
            broker.terminate()
            broker.wait()
    print(f"load average after: {os.getloadavg()}")


def report(title: str, result: dict[str, float]) -> None:
    print(title)
    for key, value in result.items():
        print(f"  {key:>18}: {value:,.1f}")


if __name__ == "__main__":
    main()
