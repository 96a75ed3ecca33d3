"""systemd's notify protocol (``sd_notify``), without dependencies.

systemd passes ``NOTIFY_SOCKET`` (an AF_UNIX datagram socket; a leading ``@`` means the
abstract namespace) to a ``Type=notify`` service, and ``WATCHDOG_USEC`` (plus
``WATCHDOG_PID``) when ``WatchdogSec=`` is set. :class:`SystemdNotifier` reads these once and
removes them from ``os.environ`` so child processes do not inherit them (a child could
otherwise report READY or feed the watchdog on our behalf). Without ``NOTIFY_SOCKET``
(running in a terminal, in tests, under another supervisor) every method does nothing.

Typical use by the daemon::

    notifier = SystemdNotifier()
    ...  # start sources, connect
    notifier.ready(status="running")
    tg.create_task(watchdog_loop(notifier))
    tg.create_task(status_loop(notifier, metrics.summary_line))
    # on SIGHUP: notifier.reloading(); reload; notifier.ready()
    # on SIGTERM: notifier.stopping(); drain
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, MutableMapping

import structlog

__all__ = ["SystemdNotifier", "status_loop", "watchdog_loop"]

log = structlog.get_logger("tstoraged.sdnotify")


class SystemdNotifier:
    """Sends state changes to systemd; a no-op when not started by systemd."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _parse_address(env.pop("NOTIFY_SOCKET", None))
        self.watchdog_period = _parse_watchdog(
            env.pop("WATCHDOG_USEC", None), env.pop("WATCHDOG_PID", None)
        )
        self._socket: socket.socket | None = None
        if self.address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the event loop on a stuck systemd: a lost STATUS beats a stall.
            self._socket.setblocking(False)

    @property
    def enabled(self) -> bool:
        """True when systemd gave us a notify socket."""
        return self._socket is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True when it was sent."""
        if self._socket is None or self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        try:
            self._socket.sendto(message, self.address)
        except OSError as error:
            log.warning("sd_notify_failed", error=str(error))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: ``READY=1``, optionally with a status line."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status(status))

    def status(self, text: str) -> bool:
        """Set the free-form status line shown by ``systemctl status``."""
        return self.notify(_status(text))

    def reloading(self) -> bool:
        """A reload starts: ``RELOADING=1`` with ``MONOTONIC_USEC``; follow with :meth:`ready`.

        systemd >= 253 (``Type=notify-reload``) requires the monotonic timestamp; older
        versions ignore it.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    def stopping(self) -> bool:
        """Shutdown starts: ``STOPPING=1``."""
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        """Keep-alive ping: ``WATCHDOG=1``."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd times out the current start/stop/reload."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def close(self) -> None:
        """Close the socket; later calls do nothing."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str) -> str:
    # One datagram is one assignment per line: a newline would start a bogus assignment.
    return "STATUS=" + " ".join(text.splitlines())


def _parse_address(value: str | None) -> str | bytes | None:
    """``/run/systemd/notify`` stays a path; ``@name`` becomes the abstract ``b"\\0name"``."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # vsock: and other transports of newer systemd are not supported: behave as unmanaged.
    log.warning("sd_notify_socket_unsupported", notify_socket=value, notifying=False)
    return None


def _parse_watchdog(usec: str | None, pid: str | None) -> float | None:
    """The watchdog period in seconds, or None when there is none for this process."""
    if not usec:
        return None
    try:
        period_us = int(usec)
        if pid is not None and pid.strip() and int(pid) != os.getpid():
            return None  # the watchdog is meant for another process (e.g. our parent)
    except ValueError:
        return None
    return period_us / 1_000_000 if period_us > 0 else None


async def watchdog_loop(notifier: SystemdNotifier, interval_fraction: float = 0.5) -> None:
    """Ping the watchdog every ``interval_fraction`` of its period, until cancelled.

    The pings come from the event loop itself, so a loop that is blocked stops pinging and
    systemd restarts the daemon. Returns at once when no watchdog is configured.
    """
    period = notifier.watchdog_period
    if period is None or not notifier.enabled:
        return
    interval = period * interval_fraction
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


async def status_loop(
    notifier: SystemdNotifier, text: Callable[[], str], interval: float = 5.0
) -> None:
    """Refresh ``STATUS=`` from ``text()`` every ``interval`` seconds, until cancelled."""
    if not notifier.enabled:
        return
    last = None
    while True:
        line = text()
        if line != last:  # avoid waking systemd when nothing changed
            notifier.status(line)
            last = line
        await asyncio.sleep(interval)
