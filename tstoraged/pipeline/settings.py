"""Settings the pipeline runs on: plain frozen dataclasses.

The daemon's config layer (TOML, human units) builds these; the pipeline depends on nothing
else, so it can be driven the same way from tests, benchmarks and one-shot tools.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BatchSettings",
    "QueueSettings",
    "RetrySettings",
    "TargetSettings",
    "WriteMode",
]

WriteMode = Literal["put", "puta"]
"""``put``: TStorage assigns acq. ``puta``: the pipeline assigns acq when a batch is sealed."""


@dataclass(frozen=True)
class TargetSettings:
    """Where and how batches are written (the ``[tstorage]`` section)."""

    host: str = "127.0.0.1"
    port: int = 2025
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    write_mode: WriteMode = "put"
    connect_timeout: float | None = None
    """Bound of connecting; default: ``timeout``."""
    server_hostname: str | None = None
    """Name to verify in the server certificate (TLS); default: ``host``."""

    @property
    def address(self) -> str:
        """``host:port``, as reported to the observer."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BatchSettings:
    """When a batch is closed (the ``[batch]`` section), whichever limit comes first."""

    max_batch_size: int = 4 * 1024 * 1024
    """Upper bound of a batch's wire size in bytes (a single larger record goes alone)."""
    max_records: int = 10_000
    flush_interval: float = 1.0
    """Seconds from the first record of a batch until it is closed, full or not."""

    def __post_init__(self) -> None:
        if self.max_batch_size <= 0 or self.max_records <= 0 or self.flush_interval <= 0:
            raise ValueError(f"batch limits must be positive: {self}")


@dataclass(frozen=True)
class QueueSettings:
    """Bound of the in-memory intake between sources and batcher (the ``[queue]`` section)."""

    max_records: int = 50_000
    max_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_records <= 0 or self.max_bytes <= 0:
            raise ValueError(f"queue limits must be positive: {self}")


@dataclass(frozen=True)
class RetrySettings:
    """How transient write failures are retried (the ``[retry]`` section).

    The wait before retry ``n`` is ``initial_backoff * 2**(n-1)``, capped at ``max_backoff``,
    then spread by ``jitter`` (a fraction: 0.2 means +-20 %) so that many daemons do not
    reconnect in lockstep. With neither give-up limit set, a batch is retried forever (the
    pipeline then stalls, by configuration, while TStorage is unreachable); otherwise it is
    dead-lettered once a limit is reached.
    """

    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    jitter: float = 0.2
    give_up_after_attempts: int | None = None
    give_up_after_seconds: float | None = None
    max_refusals: int = 64
    """ERROR answers tolerated per batch while isolating poison records, before the rest of
    the batch is dead-lettered as well (bounds the splitting work)."""
    outage_report_interval: float = 30.0
    """While TStorage is unreachable, the log says so again (cause, outage length, records
    waiting) at the first failed attempt after each interval (:mod:`.outage`)."""

    def __post_init__(self) -> None:
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError(f"need 0 <= initial_backoff <= max_backoff: {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a fraction in [0, 1]: {self}")
        if self.give_up_after_attempts is not None and self.give_up_after_attempts < 1:
            raise ValueError(f"give_up_after_attempts must be >= 1: {self}")
        if self.max_refusals < 1:
            raise ValueError(f"max_refusals must be >= 1: {self}")
        if self.outage_report_interval <= 0:
            raise ValueError(f"outage_report_interval must be positive: {self}")
