"""Start-up failures as one line naming the setting and the cause (no traceback).

``tstoraged run`` catches :class:`StartupError` and logs it as ``daemon_start_failed``, then
exits 1: a port already in use, a spool locked by another daemon, a state directory that
cannot be written. Everything is checked before a source starts, so nothing was read yet.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from tstoraged.config.model import Settings
from tstoraged.config.preflight import listen_address, running_tstoraged

__all__ = ["EXIT_STARTUP_FAILED", "StartupError", "listen_failure", "prepare_directories"]

EXIT_STARTUP_FAILED = 1


class StartupError(Exception):
    """The daemon cannot start; ``str()`` is the one line to show."""

    def __init__(self, setting: str, value: object, cause: str) -> None:
        self.setting = setting
        self.value = value
        self.cause = cause
        super().__init__(f"{setting} = {str(value)!r}: {cause}")


def _writable(directory: Path) -> str | None:
    """Create ``directory`` if needed and write a file in it; the reason when that fails."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tstoraged-write-test-", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return f"{exc.strerror or exc}{f' ({exc.filename})' if exc.filename else ''}"
    return None


def prepare_directories(settings: Settings) -> None:
    """Make sure the state directory and the dead-letter file's directory can be written.

    With the spool off nothing else would notice before a source fails to keep its
    checkpoints, or the first rejected line fails to be dead-lettered.
    """
    state_dir = settings.daemon.state_dir
    problem = _writable(state_dir)
    if problem is not None:
        raise StartupError("daemon.state_dir", state_dir, f"not writable: {problem}")
    dead_letter = settings.daemon.dead_letter.file
    if dead_letter is not None and not dead_letter.parent.is_relative_to(state_dir):
        problem = _writable(dead_letter.parent)
        if problem is not None:
            raise StartupError("daemon.dead_letter.file", dead_letter, f"not writable: {problem}")


def listen_failure(listen: str, exc: OSError) -> StartupError:
    """The metrics endpoint could not listen: say why, and who has the port if we can tell."""
    if exc.errno == errno.EADDRINUSE:
        host, port = listen_address(listen)
        version = running_tstoraged(host, port)
        owner = f"a running tstoraged ({version})" if version is not None else "another program"
        cause = f"port {port} is in use by {owner}; give this daemon a free port"
    else:
        cause = f"cannot listen there: {exc.strerror or exc}"
    return StartupError("metrics.listen", listen, cause)
