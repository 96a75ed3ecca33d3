"""sd_notify against a real AF_UNIX datagram socket, as systemd provides it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tstoraged.runtime.sdnotify import SystemdNotifier, status_loop, watchdog_loop


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self) -> list[str]:
        self.sock.settimeout(5)
        return self.sock.recv(4096).decode().split("\n")

    async def areceive(self) -> list[str]:
        self.sock.setblocking(False)
        data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        return data.decode().split("\n")

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        return False


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield FakeSystemd(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"tstoraged-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield FakeSystemd(sock, "@" + name)
    sock.close()


def notifier_for(systemd: FakeSystemd, **extra: str) -> SystemdNotifier:
    return SystemdNotifier({"NOTIFY_SOCKET": systemd.env_value, **extra})


def test_without_notify_socket_everything_is_a_silent_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.watchdog_period is None
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert notifier.watchdog() is False


def test_ready_with_status_is_one_datagram(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd)
    assert notifier.enabled
    assert notifier.ready(status="running, 3 sources")
    assert systemd.receive() == ["READY=1", "STATUS=running, 3 sources"]
    assert notifier.ready()
    assert systemd.receive() == ["READY=1"]


def test_status_stopping_watchdog_and_extend_timeout(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd)
    notifier.status("in 12k rec/s\nsecond line")
    assert systemd.receive() == ["STATUS=in 12k rec/s second line"]
    notifier.stopping()
    assert systemd.receive() == ["STOPPING=1"]
    notifier.watchdog()
    assert systemd.receive() == ["WATCHDOG=1"]
    notifier.extend_timeout(2.5)
    assert systemd.receive() == ["EXTEND_TIMEOUT_USEC=2500000"]


def test_reloading_carries_the_monotonic_timestamp(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, stamp = systemd.receive()
    assert reloading == "RELOADING=1"
    key, value = stamp.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_namespace_socket(abstract_systemd: FakeSystemd) -> None:
    notifier = notifier_for(abstract_systemd)
    notifier.ready()
    assert abstract_systemd.receive() == ["READY=1"]


def test_variables_are_removed_so_children_do_not_inherit_them(
    systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    notifier = SystemdNotifier()

    assert notifier.enabled
    assert notifier.watchdog_period == 30.0
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('NOTIFY_SOCKET'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "None"


@pytest.mark.parametrize(
    ("usec", "pid", "period"),
    [
        ("2000000", None, 2.0),
        ("2000000", "self", 2.0),
        ("2000000", "1", None),  # the watchdog belongs to another process
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_period_honours_watchdog_pid(
    systemd: FakeSystemd, usec: str | None, pid: str | None, period: float | None
) -> None:
    env = {}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    assert notifier_for(systemd, **env).watchdog_period == period


def test_unsupported_socket_address_disables_notification() -> None:
    assert not SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_vanished_socket_is_reported_as_false_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.ready() is False


async def test_watchdog_loop_pings_at_a_fraction_of_the_period(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd, WATCHDOG_USEC="20000")  # 20 ms: pings every 10 ms
    task = asyncio.create_task(watchdog_loop(notifier))
    try:
        for _ in range(3):
            assert await asyncio.wait_for(systemd.areceive(), 5) == ["WATCHDOG=1"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_returns_when_there_is_no_watchdog(systemd: FakeSystemd) -> None:
    await asyncio.wait_for(watchdog_loop(notifier_for(systemd)), 5)
    await asyncio.wait_for(watchdog_loop(SystemdNotifier({})), 5)
    assert systemd.nothing_pending()


async def test_status_loop_sends_only_changed_lines(systemd: FakeSystemd) -> None:
    notifier = notifier_for(systemd)
    lines = iter(["in 1 rec/s", "in 1 rec/s", "in 2 rec/s"])
    produced = asyncio.Event()

    def text() -> str:
        try:
            return next(lines)
        except StopIteration:
            produced.set()
            return "in 2 rec/s"

    task = asyncio.create_task(status_loop(notifier, text, interval=0.001))
    try:
        await asyncio.wait_for(produced.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert systemd.receive() == ["STATUS=in 1 rec/s"]
    assert systemd.receive() == ["STATUS=in 2 rec/s"]
    assert systemd.nothing_pending()
