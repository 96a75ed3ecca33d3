"""The ``loadavg`` source: reads /proc/loadavg at an interval and emits one record per value.

It is a :class:`tstoraged.PollingSource`: it implements ``poll()`` and the core owns the
schedule (clock-aligned ticks, slow polls skipped and counted, a failed poll logged, counted and
retried at the next tick).

/proc/loadavg looks like ``0.52 0.58 0.59 2/1234 56789``. Each reading becomes the fields
``load1``, ``load5``, ``load15`` (floats), ``running`` and ``total`` (task counts), plus
``host`` and ``minutes`` for the key; with the default mapping one reading gives three records
(moid = 1, 5, 15) whose payload is the load as a little-endian double.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, HttpUrl

from tstoraged import KeyMapping, PayloadMapping, PollingConfig, PollingSource, Sensitive, Tick

__all__ = ["LoadAvgConfig", "LoadAvgSource", "parse_loadavg"]

WINDOWS = (1, 5, 15)


class LoadAvgConfig(PollingConfig):
    """``type = "loadavg"``: the 1/5/15-minute load averages of this machine.

    Only ``type`` and ``name`` are required; the mapping defaults to cid 1, mid = ``host_id``,
    moid = the window in minutes, payload = the load average as ``<d``.
    """

    # PollingConfig brings interval (default 10 s; "500ms", "10s", "5m" or seconds), offset
    # and poll_timeout; the core polls on multiples of the interval.
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


class LoadAvgSource(PollingSource):
    """Reads the load average at every tick of the schedule the core runs."""

    config: LoadAvgConfig

    async def setup(self) -> None:
        self.context.log.info(
            "loadavg_started",
            path=str(self.config.path),
            interval=self.config.interval,
            hostname=socket.gethostname(),
            dashboard=str(self.config.dashboard_url) if self.config.dashboard_url else None,
        )

    async def poll(self, tick: Tick) -> None:
        # The tick's instant as receive time: every record of a reading has the aligned
        # capture time (:00, :10, ...), whenever the read itself happened.
        await self.read_once(received_ns=tick.at_ns)

    async def read_once(self, received_ns: int | None = None) -> None:
        """Take one reading and emit its records (or reject the input)."""
        path = self.config.path
        received_ns = time.time_ns() if received_ns is None else received_ns
        try:
            # Reading /proc is instant; a regular file in tests is tiny. No thread needed.
            text = path.read_text(encoding="ascii")
        except OSError as exc:
            # A missing file is an operator problem, not input to dead-letter: the poll fails,
            # the core logs and counts it, reports it in status and polls again at the next tick.
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
