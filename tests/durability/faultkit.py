"""Shared pieces of the fault tests: a steady file appender, daemon configs, read-back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.record import Key
from tstorage_client.response import ResponseAcq

CID = 9


class Appender:
    """Appends CSV lines ``seq,ts`` to a file at a steady pace, like a PLC logger."""

    def __init__(
        self,
        path: Path,
        lines_per_burst: int = 40,
        pause: float = 0.01,
        *,
        first_seq: int | None = None,
    ) -> None:
        """A new file with a header, or (``first_seq``) appending to an existing one."""
        self.path = path
        self.written = 0
        self._first = first_seq or 0
        self._stop = threading.Event()
        self._burst = lines_per_burst
        self._pause = pause
        if first_seq is None:
            path.write_text("seq,ts\n")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.path.open("a") as file:
            while not self._stop.is_set():
                now = time.time_ns()
                seq = self._first + self.written
                lines = [f"{seq + i},{now + i}\n" for i in range(self._burst)]
                file.write("".join(lines))
                file.flush()
                self.written += self._burst
                self._stop.wait(self._pause)  # pacing of the load, not synchronization

    def __enter__(self) -> Appender:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.written

    def __exit__(self, *exc: object) -> None:
        self.stop()


def daemon_config(
    tmp: Path,
    port: int,
    source: str,
    *,
    write_mode: str = "put",
    tstorage: str = "",
    spool: str = "",
    spool_enabled: bool = True,
    retry: str = "",
    max_records: int = 50_000,
    max_batch_size: str = "4MiB",
    queue_records: int = 200_000,
) -> Path:
    cfg = tmp / "tstoraged.toml"
    cfg.write_text(
        f"""
[tstorage]
port = {port}
write_mode = "{write_mode}"
{tstorage}
[metrics]
listen = "127.0.0.1:0"
[log]
format = "json"
[daemon]
state_dir = "{tmp / "state"}"
drain_timeout = "5s"
[batch]
flush_interval = "100ms"
max_records = {max_records}
max_batch_size = "{max_batch_size}"
[queue]
max_records = {queue_records}
[retry]
initial_backoff = "50ms"
max_backoff = "250ms"
{retry}
[spool]
enabled = {"true" if spool_enabled else "false"}
fsync = "batch"
min_free_space = 0
{spool}
{source}
"""
    )
    return cfg


MIN_LINE_BYTES = len("0,") + 19 + 1
"""The shortest line :class:`Appender` writes: ``seq,ts`` with a 19-digit ns timestamp."""


def tail_source(
    path: Path,
    payload: str = '{ format = "<q", fields = ["seq"] }',
    *,
    read_chunk_bytes: int | None = None,
) -> str:
    chunk = "" if read_chunk_bytes is None else f"read_chunk_bytes = {read_chunk_bytes}"
    return f"""
[[sources]]
type = "files"
name = "plc"
mode = "tail"
paths = ["{path}"]
poll_interval = 0.05
format = "csv"
key = {{ cid = {CID}, mid = "{{seq}}", moid = 0 }}
cap = {{ field = "ts", unit = "ns" }}
payload = {payload}
{chunk}
"""


def generator_source(count: int, rate: int = 0) -> str:
    return f"""
[[sources]]
type = "generator"
name = "gen"
count = {count}
rate = {rate}
chunk = 1000
key = {{ cid = {CID}, mid = "{{seq}}", moid = 0 }}
"""


def stored(port: int) -> list[Key]:
    low = Key(CID, Key.min().mid, Key.min().moid, Key.min().cap, Key.min().acq)
    high = Key(CID + 1, Key.max().mid, Key.max().moid, Key.max().cap, Key.max().acq)
    with Channel("127.0.0.1", port, BytesPayloadType(), timeout=30) as channel:
        *records, final = channel.get_iter(low, high)  # get_iter ends with its final response
    assert isinstance(final, ResponseAcq)
    assert final.is_ok(), final
    return [record.key for record in records]


def distinct_mids(port: int) -> int:
    return len({key.mid for key in stored(port)})
