"""The settings schema: one pydantic model per config section.

``load_config`` (in :mod:`tstoraged.config.loader`) is the way to build :class:`Settings`;
it adds the ``[[sources]]`` validated against each plugin's own model. Every section forbids
unknown keys, and every setting can be overridden by ``TSTORAGED_<SECTION>__<KEY>``.
``docs/configuration.md`` and ``config/tstoraged.toml`` describe every key; keep them in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializeAsAny,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tstoraged.config.secrets import Secret, SecretFileSiblings
from tstoraged.config.units import ByteSize, Duration, format_duration, parse_duration
from tstoraged.source import SourceConfig

__all__ = [
    "BatchSettings",
    "DaemonSettings",
    "DeadLetterSettings",
    "LogSettings",
    "MetricsSettings",
    "QueueSettings",
    "RetrySettings",
    "Settings",
    "SpoolSettings",
    "TLSSettings",
    "TStorageSettings",
]

DEFAULT_CONFIG_PATH = Path("/etc/tstoraged/tstoraged.toml")
DEFAULT_STATE_DIR = Path("/var/lib/tstoraged")
ENV_PREFIX = "TSTORAGED_"
ENV_NESTED_DELIMITER = "__"

# TStorage frames carry 32-bit signed lengths, so a batch must stay below 2 GiB.
MAX_BATCH_SIZE_LIMIT = 2**31


LISTEN_EXPECTED = (
    'expected "HOST:PORT": an address of this machine and a port 0-65535, e.g. '
    '"127.0.0.1:9108" (this machine only), "0.0.0.0:9108" (every interface) or "[::1]:9108" '
    "(IPv6); port 0 picks a free port"
)

GIVE_UP_EXPECTED = 'expected "never", a number of attempts (e.g. 5) or a duration (e.g. "1h")'


def _parse_give_up(value: Any) -> str | int | float:
    """``"never"`` stays; an int (or digits) is an attempt count; anything else a duration."""
    if value == "never":
        return "never"
    if isinstance(value, int) and not isinstance(value, bool):
        attempts = value
    elif isinstance(value, str) and value.strip().isdigit():
        attempts = int(value)  # from the environment, digits mean attempts as in the file
    else:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(GIVE_UP_EXPECTED) from None
        if seconds <= 0:
            raise ValueError(GIVE_UP_EXPECTED)
        return seconds
    if attempts < 1:
        raise ValueError("expected at least 1 attempt")
    return attempts


def _format_give_up(value: str | int | float) -> str | int:
    return format_duration(value) if isinstance(value, float) else value


GiveUp = Annotated[
    Literal["never"] | int | float,
    BeforeValidator(_parse_give_up),
    PlainSerializer(_format_give_up, when_used="json"),
]
"""A retry limit: ``"never"``, an attempt count (int), or a duration (float seconds)."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors; settings are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSSettings(Section, SecretFileSiblings):
    """``[tstorage.tls]``: TLS to TStorage (off by default)."""

    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the server; system CAs when unset."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(default=None, description="Client private key (PEM).")
    key_password: Secret | None = Field(
        default=None, description="Passphrase of key_file (also key_password_file)."
    )
    server_hostname: str | None = Field(
        default=None, description="Name to verify in the server certificate; default: host."
    )
    verify: bool = Field(default=True, description="Verify the server certificate.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable_when_enabled(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        # Checked here so that `tstoraged check` catches a wrong path, not the first connect.
        if path is not None and info.data.get("enabled") and not os.access(path, os.R_OK):
            reason = "no such file" if not path.exists() else "not readable by this user"
            raise ValueError(f"{reason} (needed because tls.enabled = true)")
        return path

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not")
        return self


class TStorageSettings(Section):
    """``[tstorage]``: where records are written."""

    host: str = Field(default="127.0.0.1", min_length=1, description="TStorage host.")
    port: int = Field(default=2025, ge=1, le=65535, description="TStorage port.")
    timeout: Duration = Field(default=10.0, gt=0, description="Timeout of one request.")
    connect_timeout: Duration = Field(default=10.0, gt=0, description="Timeout of connecting.")
    tls: TLSSettings = Field(default_factory=TLSSettings)
    write_mode: Literal["put", "puta"] = Field(
        default="put",
        description="put: TStorage assigns acq; puta: the daemon assigns acq when a batch is "
        "sealed, so a replayed batch overwrites instead of duplicating.",
    )


class BatchSettings(Section):
    """``[batch]``: when a batch is closed and written."""

    max_batch_size: ByteSize = Field(
        default=4 * 2**20,
        gt=0,
        lt=MAX_BATCH_SIZE_LIMIT,
        description="Close a batch at this many encoded bytes (< 2 GiB).",
    )
    max_records: int = Field(
        default=10_000, gt=0, description="Close a batch at this many records."
    )
    flush_interval: Duration = Field(
        default=1.0, gt=0, description="Close a non-empty batch this long after its first record."
    )


class QueueSettings(Section):
    """``[queue]``: the in-memory bound between sources and writer (backpressure)."""

    max_records: int = Field(default=50_000, gt=0, description="Sources wait above this.")
    max_bytes: ByteSize = Field(default=16 * 2**20, gt=0, description="Sources wait above this.")


class RetrySettings(Section):
    """``[retry]``: how failed writes are retried.

    ``give_up`` is ``"never"`` (retry transient failures forever; with the spool enabled the
    backlog goes to disk), a number of attempts, or a duration (``"1h"``) after the first
    failure. A batch that gives up is dead-lettered with the reason.
    """

    initial_backoff: Duration = Field(default=0.5, gt=0, description="First wait.")
    max_backoff: Duration = Field(default=30.0, gt=0, description="Longest wait.")
    jitter: float = Field(
        default=0.2, ge=0, le=1, description="Random fraction (0..1) added to/taken from waits."
    )
    give_up: GiveUp = Field(
        default="never", description='"never", a number of attempts, or a duration.'
    )
    max_refusals: int = Field(
        default=64,
        gt=0,
        description="ERROR answers tolerated per batch while isolating invalid records.",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> RetrySettings:
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff is smaller than initial_backoff")
        return self

    @property
    def give_up_attempts(self) -> int | None:
        """The attempt limit, or None."""
        return self.give_up if isinstance(self.give_up, int) else None

    @property
    def give_up_after(self) -> float | None:
        """The time limit in seconds, or None."""
        return self.give_up if isinstance(self.give_up, float) else None


class SpoolSettings(Section):
    """``[spool]``: the disk buffer that keeps records while TStorage is unreachable."""

    enabled: bool = Field(default=False, description="Spool batches to disk before writing.")
    dir: Path | None = Field(default=None, description="Spool directory; default state_dir/spool.")
    fsync: Literal["batch", "interval"] = Field(
        default="batch", description="fsync every batch, or every fsync_interval."
    )
    fsync_interval: Duration = Field(default=1.0, gt=0, description="With fsync = interval.")
    max_size: ByteSize = Field(default=1024 * 2**20, gt=0, description="Spool size bound.")
    overflow: Literal["block", "drop_oldest"] = Field(
        default="block", description="At max_size: make sources wait, or drop oldest batches."
    )
    min_free_space: ByteSize = Field(
        default=100 * 2**20, ge=0, description="Treat the spool as full below this free space."
    )


class LogSettings(Section):
    """``[log]``: structured logs to stdout."""

    level: Literal["debug", "info", "warning", "error", "critical"] = Field(default="info")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a terminal, JSON lines otherwise."
    )

    @model_validator(mode="before")
    @classmethod
    def _lowercase_level(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("level"), str):
            return {**data, "level": data["level"].lower()}
        return data


class MetricsSettings(Section):
    """``[metrics]``: the Prometheus endpoint with /metrics, /healthz and /readyz."""

    enabled: bool = Field(default=True)
    listen: str = Field(
        default="127.0.0.1:9108",
        description='"host:port" (IPv6 as "[::1]:9108"); port 0 picks a free port.',
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535 or any(c.isspace() for c in host):
            raise ValueError(LISTEN_EXPECTED)
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f'an IPv6 address goes in brackets, e.g. "[::1]:{port}"')
        return listen


class DeadLetterSettings(Section):
    """``[daemon.dead_letter]``: where rejected input and refused records go, as JSON lines."""

    file: Path | None = Field(default=None, description="Default: state_dir/dead-letter.jsonl.")
    max_size: ByteSize = Field(
        default=64 * 2**20, gt=0, description="Rotated to <file>.1 when larger."
    )


class DaemonSettings(Section):
    """``[daemon]``: process-wide settings."""

    state_dir: Path = Field(
        default=DEFAULT_STATE_DIR,
        description="Checkpoints, spool, dead letters; $STATE_DIRECTORY under systemd.",
    )
    drain_timeout: Duration = Field(
        default=30.0, ge=0, description="On stop, how long to flush buffered records."
    )
    dead_letter: DeadLetterSettings = Field(default_factory=DeadLetterSettings)


def state_dir_default(env: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY`` (first entry; systemd's StateDirectory=) or /var/lib/tstoraged."""
    state_directory = env.get("STATE_DIRECTORY", "")
    first = state_directory.split(":")[0]
    return Path(first) if first else DEFAULT_STATE_DIR


class Settings(Section):
    """The whole daemon configuration, as loaded by :func:`tstoraged.config.load_config`.

    A plain model rather than a ``BaseSettings``: the loader runs pydantic-settings' environment
    parsing itself, with the environment it is given, and validates with a context (the
    environment, the plugins) that ``BaseSettings`` does not pass through.
    """

    tstorage: TStorageSettings = Field(default_factory=TStorageSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    # Each entry is an instance of its plugin's model; the loader validates them.
    sources: tuple[SerializeAsAny[SourceConfig], ...] = Field(default=())

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """Fill defaults that depend on the environment or on other settings.

        Done on the raw data so that the effective config shows the resolved paths.
        """
        if not isinstance(data, Mapping):
            return data
        context = info.context or {}
        env = context.get("env", os.environ)
        data = dict(data)
        daemon = data.get("daemon", {})
        if not isinstance(daemon, Mapping):
            return data
        daemon = dict(daemon)
        if "state_dir" not in daemon:
            daemon["state_dir"] = str(state_dir_default(env))
        state_dir = Path(str(daemon["state_dir"]))
        dead_letter = daemon.get("dead_letter", {})
        if isinstance(dead_letter, Mapping) and "file" not in dead_letter:
            daemon["dead_letter"] = {**dead_letter, "file": str(state_dir / "dead-letter.jsonl")}
        data["daemon"] = daemon
        spool = data.get("spool", {})
        if isinstance(spool, Mapping) and "dir" not in spool:
            data["spool"] = {**spool, "dir": str(state_dir / "spool")}
        return data

    @property
    def enabled_sources(self) -> tuple[SourceConfig, ...]:
        """Sources to run (a disabled source is validated but not run)."""
        return tuple(source for source in self.sources if source.enabled)
