"""Checks of the machine a valid config is about to run on (``tstoraged check``).

Each check is a small function ``(CheckContext) -> Iterable[Finding]`` and looks without side
effects: nothing is created, nothing is written, no lock is kept, no data is sent (``--connect``
asks TStorage for a GET_ACQ, which reads nothing). To add a check, write the function and add
it to :data:`ENVIRONMENT_CHECKS`; a source type adds its own through
:meth:`tstoraged.SourceConfig.check_environment`.

An ``error`` means the daemon would not start, or a setting cannot work (``tstoraged check``
exits 1); a ``warning`` that it may work but probably not as meant. Checks run as the user who
runs ``check``: run it as the daemon's user (``sudo -u tstoraged tstoraged check``) to see
what the daemon will see.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tstoraged.config.model import Settings
from tstoraged.findings import Finding
from tstoraged.spool.diskio import LOCK_FILE as SPOOL_LOCK_FILE

__all__ = [
    "ENVIRONMENT_CHECKS",
    "CheckContext",
    "EnvironmentCheck",
    "check_environment",
    "directory_problem",
    "listen_address",
    "running_tstoraged",
]


PROBE_TIMEOUT = 2.0
"""Seconds to wait for a daemon that holds the metrics port to answer ``/status``."""


@dataclass(frozen=True)
class CheckContext:
    """What a check looks at."""

    settings: Settings
    env: Mapping[str, str]
    connect: bool = False
    """Whether checks may connect to remote services (``tstoraged check --connect``)."""


EnvironmentCheck = Callable[[CheckContext], Iterable[Finding]]


def _user() -> str:
    return f"uid {os.geteuid()}"


def directory_problem(path: Path, purpose: str = "") -> str | None:
    """Why the daemon could not create files in directory ``path``, or None.

    A directory that does not exist is fine when it can be created (the daemon creates its
    own directories).
    """
    if path.exists():
        if not path.is_dir():
            return "is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"is not writable by this user ({_user()}){purpose}"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and cannot be created: {parent} is not writable ({_user()})"
    return None


def check_state_dir(context: CheckContext) -> Iterator[Finding]:
    """The state directory (checkpoints, spool, dead letters) must be writable."""
    state_dir = context.settings.daemon.state_dir
    problem = directory_problem(state_dir)
    if problem is not None:
        yield Finding("error", ("daemon", "state_dir"), problem, repr(str(state_dir)))


def _below_broken_state_dir(path: Path, context: CheckContext) -> bool:
    state_dir = context.settings.daemon.state_dir
    return path.is_relative_to(state_dir) and directory_problem(state_dir) is not None


def check_dead_letter_file(context: CheckContext) -> Iterator[Finding]:
    """The dead-letter file must be appendable (its directory writable)."""
    path = context.settings.daemon.dead_letter.file
    if path is None:
        return
    key = ("daemon", "dead_letter", "file")
    if _below_broken_state_dir(path, context):
        return  # said once, at daemon.state_dir
    if path.exists() and not os.access(path, os.W_OK):
        yield Finding("error", key, f"is not writable by this user ({_user()})", repr(str(path)))
        return
    problem = directory_problem(path.parent)
    if problem is not None:
        yield Finding("error", key, f"its directory {path.parent} {problem}", repr(str(path)))


def _locked_by_another_process(lock: Path) -> bool:
    """True when another process holds the spool's lock (looked at, not taken)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock if it was taken
    return False


def check_spool(context: CheckContext) -> Iterator[Finding]:
    """An enabled spool needs a writable directory that no other daemon is using."""
    spool = context.settings.spool
    if not spool.enabled or spool.dir is None:
        return
    key = ("spool", "dir")
    if _below_broken_state_dir(spool.dir, context):
        return
    problem = directory_problem(spool.dir)
    if problem is not None:
        yield Finding("error", key, problem, repr(str(spool.dir)))
    elif _locked_by_another_process(spool.dir / SPOOL_LOCK_FILE):
        yield Finding(
            "warning",
            key,
            "is in use by a running tstoraged: fine when checking a config before a reload, but "
            "a second daemon on this spool would not start",
            repr(str(spool.dir)),
        )


def listen_address(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` -> ``("127.0.0.1", 9108)``; ``"[::1]:0"`` -> ``("::1", 0)``."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def running_tstoraged(host: str, port: int) -> str | None:
    """The version of the tstoraged that answers on the address, or None."""
    shown = f"[{host}]" if ":" in host else host
    if shown in ("0.0.0.0", "[::]"):
        shown = "127.0.0.1" if shown == "0.0.0.0" else "[::1]"
    url = f"http://{shown}:{port}/status"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as response:
            document = json.loads(response.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if isinstance(document, dict) and "sources" in document and "version" in document:
        return str(document["version"])
    return None


def check_metrics_listen(context: CheckContext) -> Iterator[Finding]:
    """The metrics address must be one of this machine's, with the port free (or ours)."""
    metrics = context.settings.metrics
    if not metrics.enabled:
        return
    key, shown = ("metrics", "listen"), repr(metrics.listen)
    host, port = listen_address(metrics.listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        yield Finding("error", key, f"cannot resolve host {host!r}: {exc.strerror}", shown)
        return
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As the daemon's server does: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                yield Finding("error", key, f"cannot listen there: {exc.strerror}", shown)
                return
        else:
            return
    if port == 0:
        return
    version = running_tstoraged(host, port)
    if version is not None:
        yield Finding(
            "warning",
            key,
            f"port {port} is in use by a running tstoraged ({version}): fine when checking a "
            "config before a reload; another daemon needs its own port",
            shown,
        )
    else:
        yield Finding(
            "error",
            key,
            f"port {port} is in use by another program; choose a free port",
            shown,
        )


def check_sources(context: CheckContext) -> Iterator[Finding]:
    """What each enabled source's own checks find (files that are not there, ...)."""
    for index, source in enumerate(context.settings.sources):
        if source.enabled:
            for finding in source.check_environment():
                yield finding.under(("sources", index))


def _connect_problem(context: CheckContext) -> str | None:
    from tstorage_client.channel import Channel
    from tstorage_client.payload_type import BytesPayloadType
    from tstorage_client.record import Key
    from tstoraged.runtime.wiring import target_settings

    target = target_settings(context.settings)
    try:
        with socket.create_connection(
            (target.host, target.port), timeout=target.connect_timeout
        ) as sock:
            if target.ssl_context is not None:
                name = target.server_hostname or target.host
                with target.ssl_context.wrap_socket(sock, server_hostname=name):
                    pass
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except TimeoutError:
        return f"no answer within connect_timeout ({target.connect_timeout:g}s)"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    channel = Channel(
        target.host,
        target.port,
        BytesPayloadType(),
        timeout=target.timeout,
        ssl_context=target.ssl_context,
        connect_timeout=target.connect_timeout,
        server_hostname=target.server_hostname,
    )
    # connect() answers ERROR instead of raising (the `with` statement would raise).
    if not channel.connect().is_ok():
        return "cannot connect"
    try:
        response = channel.get_acq(Key.min(), Key.max())
    finally:
        channel.close()
    if not response.is_ok():
        return f"GET_ACQ answered {response.status.name}"
    return None


def check_tstorage_answers(context: CheckContext) -> Iterator[Finding]:
    """With ``--connect``: TStorage accepts a connection (and TLS) and answers a GET_ACQ."""
    if not context.connect:
        return
    tstorage = context.settings.tstorage
    shown = repr(f"{tstorage.host}:{tstorage.port}")
    try:
        problem = _connect_problem(context)
    except (ssl.SSLError, OSError, ValueError) as exc:
        # Building the TLS context failed: a certificate or key that does not load.
        yield Finding("error", ("tstorage", "tls"), f"TLS settings do not load: {exc}")
        return
    if problem is not None:
        yield Finding("error", ("tstorage", "host"), problem, shown)


ENVIRONMENT_CHECKS: tuple[EnvironmentCheck, ...] = (
    check_state_dir,
    check_dead_letter_file,
    check_spool,
    check_metrics_listen,
    check_sources,
    check_tstorage_answers,
)
"""The checks ``tstoraged check`` runs, in this order; one line each."""


def check_environment(
    settings: Settings,
    env: Mapping[str, str] = os.environ,
    *,
    connect: bool = False,
    checks: Iterable[EnvironmentCheck] = ENVIRONMENT_CHECKS,
) -> list[Finding]:
    """Run the checks; a check that fails itself is reported as an error finding."""
    context = CheckContext(settings, env, connect)
    findings: list[Finding] = []
    for check in checks:
        try:
            findings.extend(check(context))
        except Exception as exc:
            name = getattr(check, "__name__", repr(check))
            findings.append(
                Finding("error", (), f"check {name} failed: {type(exc).__name__}: {exc}")
            )
    return findings
