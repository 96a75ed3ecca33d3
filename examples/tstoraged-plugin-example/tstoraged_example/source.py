"""The ``loadavg`` source: reads /proc/loadavg at an interval and emits one record per value.

/proc/loadavg looks like ``0.52 0.58 0.59 2/1234 56789``. Each reading becomes the fields
``load1``, ``load5``, ``load15`` (floats), ``running`` and ``total`` (task counts), plus
``host`` and ``minutes`` for the key; with the default mapping one reading gives three records
(moid = 1, 5, 15) whose payload is the load as a little-endian double.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, HttpUrl

from tstoraged import Sensitive, Source, SourceConfig
from tstoraged.config import Duration
from tstoraged.mapping.model import KeyMapping, PayloadMapping

__all__ = ["LoadAvgConfig", "LoadAvgSource", "parse_loadavg"]

WINDOWS = (1, 5, 15)


class LoadAvgConfig(SourceConfig):
    """``type = "loadavg"``: the 1/5/15-minute load averages of this machine.

    Only ``type`` and ``name`` are required; the mapping defaults to cid 1, mid = ``host_id``,
    moid = the window in minutes, payload = the load average as ``<d``.
    """

    # Duration accepts "500ms", "10s", "5m" or plain seconds, like the core's own settings.
    interval: Duration = Field(default=10.0, gt=0, description="Time between readings.")
    path: Path = Field(
        default=Path("/proc/loadavg"), description="File to read (a test points it elsewhere)."
    )
    host_id: int = Field(
        default=0, ge=0, lt=2**32, description="Goes into the key as the field `host_id`."
    )
    key: KeyMapping = Field(
        default_factory=lambda: KeyMapping(cid=1, mid="{host_id}", moid="{minutes}"),
        description="How fields become cid, mid and moid.",
    )
    payload: PayloadMapping = Field(
        default_factory=lambda: PayloadMapping.model_validate(
            {"codec": "struct", "format": "<d", "fields": ["load"]}
        ),
        description="How fields become the payload bytes.",
    )
    # Sensitive(): validated like any URL, but never shown: `tstoraged check` prints
    # **********, config errors and log lines mask it. For API keys and URLs with credentials;
    # a password that should also come from a file or a systemd credential is a `Secret`.
    dashboard_url: Annotated[HttpUrl, Sensitive()] | None = Field(
        default=None,
        description="Link to this host's dashboard, logged when the source starts (such "
        "links often carry an access token, hence Sensitive).",
    )


def parse_loadavg(text: str) -> dict[str, Any]:
    """``"0.52 0.58 0.59 2/1234 56789"`` -> fields; ValueError on anything else."""
    parts = text.split()
    if len(parts) < 4 or "/" not in parts[3]:
        raise ValueError(f"not a loadavg line: {text[:80]!r}")
    running, total = parts[3].split("/", 1)
    return {
        "load1": float(parts[0]),
        "load5": float(parts[1]),
        "load15": float(parts[2]),
        "running": int(running),
        "total": int(total),
    }


class LoadAvgSource(Source):
    """Reads the load average every ``interval`` seconds until cancelled."""

    config: LoadAvgConfig

    async def run(self) -> None:
        config = self.config
        self.context.log.info(
            "loadavg_started",
            path=str(config.path),
            interval=config.interval,
            hostname=socket.gethostname(),
            dashboard=str(config.dashboard_url) if config.dashboard_url else None,
        )
        next_due = time.monotonic()
        while True:
            await self.read_once()
            # A fixed schedule, so slow reads do not make the interval drift.
            next_due += config.interval
            await asyncio.sleep(max(0.0, next_due - time.monotonic()))

    async def read_once(self) -> None:
        """Take one reading and emit its records (or reject the input)."""
        path = self.config.path
        received_ns = time.time_ns()
        try:
            # Reading /proc is instant; a regular file in tests is tiny. No thread needed.
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            # A missing file is an operator problem, not input to dead-letter: fail and let
            # the core restart the source after a backoff (the error is logged).
            raise RuntimeError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            fields = parse_loadavg(text)
        except ValueError as exc:
            self.context.reject(text, str(exc), origin=str(path))
            return
        records = []
        for minutes in WINDOWS:
            row = {
                **fields,
                "host_id": self.config.host_id,
                "minutes": minutes,
                "load": fields[f"load{minutes}"],
            }
            record = self.context.map(row, origin=f"{path}:load{minutes}", received_ns=received_ns)
            if record is not None:
                records.append(record)
        # No position to commit, so no ack callback: /proc/loadavg cannot be re-read later.
        await self.context.emit(records)
