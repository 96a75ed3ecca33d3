"""The ``type = "files"`` source configuration."""

from __future__ import annotations

import codecs
import glob
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tstoraged.config.units import ByteSize, Duration
from tstoraged.findings import Finding
from tstoraged.mapping.model import CapMapping, KeyMapping, PayloadMapping
from tstoraged.source import SourceConfig

__all__ = ["RECORDS_MAPPING", "CsvOptions", "FilesConfig"]

# For ``format = "records"`` the row itself carries key, capture time and payload. These
# defaults describe exactly that, so the core can compile and show a mapping like any other
# source's; the parser builds records directly from the row and does not consult them.
RECORDS_MAPPING: dict[str, Any] = {
    "key": {"cid": "{cid}", "mid": "{mid}", "moid": "{moid}"},
    "cap": {"field": "cap", "unit": "ns", "epoch": "tstorage"},
    "payload": {"codec": "raw", "field": "payload"},
}


_MAPPING_MODELS: dict[str, type[BaseModel]] = {
    "key": KeyMapping,
    "cap": CapMapping,
    "payload": PayloadMapping,
}


def _is_records_part(name: str, value: Any) -> bool:
    """True when ``value`` is the records format's own ``key``/``cap``/``payload`` table."""
    model = _MAPPING_MODELS[name]
    try:
        return model.model_validate(value) == model.model_validate(RECORDS_MAPPING[name])
    except ValueError:
        return False


_MODE_SETTINGS: dict[str, tuple[str, ...]] = {
    "paths": ("tail", "once"),
    "exclude": ("tail", "once"),
    "start_at": ("tail",),
    "rotate_wait": ("tail",),
    "unreadable_retry_interval": ("tail",),
    "directory": ("drop",),
    "pattern": ("drop",),
    "ignore": ("drop",),
    "settle_time": ("drop",),
    "on_done": ("drop",),
    "done_dir": ("drop",),
    "failed_dir": ("drop",),
    "max_bad_lines": ("drop", "once"),
    "ignore_checkpoints": ("once",),
}
"""The settings that only some modes use."""


class CsvOptions(BaseModel):
    """How CSV lines are split into named fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    header: bool = Field(
        default=True,
        description="Line 1 of every file names the columns (and is skipped as data).",
    )
    columns: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Column names; required without a header, overrides the header's names.",
    )

    @model_validator(mode="after")
    def _columns_known(self) -> CsvOptions:
        if not self.header and not self.columns:
            raise ValueError("csv.columns is required when csv.header is false")
        return self


class FilesConfig(SourceConfig):
    """Settings of a ``files`` source: which files, how to read them, how fields map."""

    type: Literal["files"] = "files"
    mode: Literal["tail", "drop", "once"] = Field(
        default="tail",
        description="tail: follow growing files like `tail -F`; drop: ingest complete files "
        "dropped into a directory, then move or delete them; once: read the files matching "
        "paths to their end, then finish (backfill imports).",
    )
    # tail mode
    paths: list[str] = Field(
        default_factory=list, description="Glob patterns (tail and once modes); ** recurses."
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns of file names never read (e.g. compressed rotations).",
    )
    start_at: Literal["beginning", "end"] = Field(
        default="beginning",
        description="Where to start in a file found at startup without a checkpoint. "
        "Files appearing later are always read from the beginning.",
    )
    rotate_wait: Duration = Field(
        default=5.0,
        ge=0,
        description="How long a file that left the globs (rotated away) is still followed.",
    )
    # drop mode
    directory: Path | None = Field(default=None, description="Drop directory (drop mode).")
    pattern: str = Field(default="*", description="Glob of file names to ingest (drop mode).")
    ignore: list[str] = Field(
        default_factory=lambda: [".*", "*.tmp", "*.part", "*.partial"],
        description="Names still being written (temp names renamed into place when complete).",
    )
    settle_time: Duration = Field(
        default=2.0,
        ge=0,
        description="A dropped file is complete once unchanged (size, mtime) this long.",
    )
    on_done: Literal["move", "delete"] = "move"
    done_dir: Path | None = Field(default=None, description="Default: <directory>/done.")
    failed_dir: Path | None = Field(default=None, description="Default: <directory>/failed.")
    max_bad_lines: int | None = Field(
        default=None,
        ge=0,
        description="Drop and once modes: a file with more rejected lines fails (None: no limit).",
    )
    ignore_checkpoints: bool = Field(
        default=False,
        description="Once mode: read files again that their checkpoints say were imported.",
    )
    # reading
    format: Literal["csv", "jsonl", "records"] = "csv"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    encoding: str = "utf-8"
    poll_interval: Duration = Field(default=1.0, gt=0, description="Time between file scans.")
    unreadable_retry_interval: Duration = Field(
        default=10.0,
        gt=0,
        description="Tail mode: how often a file that cannot be opened (permissions) is tried "
        "again; meanwhile it is the source's problem in status.",
    )
    max_line_bytes: ByteSize = Field(
        default=65_536, ge=16, description="Longer lines are rejected and skipped."
    )
    read_chunk_bytes: ByteSize = Field(default=1 << 20, ge=1, description="Bytes read per chunk.")
    fingerprint_bytes: ByteSize = Field(
        default=1024, ge=1, description="Leading bytes hashed to identify a file."
    )
    checkpoint_interval: Duration = Field(
        default=1.0, ge=0, description="Time between checkpoint writes while data flows."
    )

    @model_validator(mode="before")
    @classmethod
    def _records_mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("format") != "records":
            return data
        # The row's own mapping may be given back as it is shown (`tstoraged check` prints
        # the effective config), but no other.
        given = sorted(k for k in RECORDS_MAPPING if k in data and not _is_records_part(k, data[k]))
        if given:
            raise ValueError(
                f"format 'records' takes key, cap and payload from each row; remove {given}"
            )
        return {**data, **RECORDS_MAPPING}

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        # Lines are split on the byte b"\n" before decoding.
        if "\n,".encode(value) != b"\n,":
            raise ValueError(f"encoding {value!r} is not ASCII-compatible (e.g. utf-8, latin-1)")
        return value

    @model_validator(mode="after")
    def _mode_settings(self) -> FilesConfig:
        if self.mode in ("tail", "once") and not self.paths:
            raise ValueError(f"mode {self.mode!r} needs paths (a list of glob patterns)")
        if self.mode == "drop" and self.directory is None:
            raise ValueError("mode 'drop' needs directory")
        # A setting of another mode is most likely a mistake (wrong mode, or a key meant for
        # another source). Defaults are fine: `tstoraged check` prints every key.
        foreign = [
            name
            for name, modes in _MODE_SETTINGS.items()
            if self.mode not in modes
            and getattr(self, name)
            != type(self).model_fields[name].get_default(call_default_factory=True)
        ]
        if foreign:
            raise ValueError(f"{', '.join(foreign)} not used in mode {self.mode!r}")
        return self

    def check_environment(self) -> list[Finding]:
        """Directories that do not exist, globs that match nothing, files this user cannot read."""
        if self.mode == "drop":
            return _drop_directory_findings(self)
        return [finding for i, p in enumerate(self.paths) for finding in _glob_findings(self, i, p)]

    @property
    def resolved_done_dir(self) -> Path:
        """Where completely ingested dropped files go."""
        assert self.directory is not None
        return self.done_dir or self.directory / "done"

    @property
    def resolved_failed_dir(self) -> Path:
        """Where dropped files that could not be ingested go, with a ``.reason`` file."""
        assert self.directory is not None
        return self.failed_dir or self.directory / "failed"


def _glob_findings(config: FilesConfig, index: int, pattern: str) -> list[Finding]:
    from tstoraged_files.tail import excluded

    key, shown = ("paths", index), repr(pattern)
    matches = [
        path
        for path in glob.glob(pattern, recursive=True)
        if os.path.isfile(path) and not excluded(path, config.exclude)
    ]
    if not matches:
        fixed = _fixed_prefix(pattern)
        where = f" ({fixed} does not exist)" if not fixed.exists() else ""
        return [Finding("warning", key, f"matches no file yet{where}", shown)]
    unreadable = sorted(path for path in matches if not os.access(path, os.R_OK))
    if not unreadable:
        return []
    return [
        Finding(
            "warning",
            key,
            f"{len(unreadable)} of the {len(matches)} files it matches cannot be read by this "
            f"user (uid {os.geteuid()}), e.g. {unreadable[0]}",
            shown,
        )
    ]


def _fixed_prefix(pattern: str) -> Path:
    """The leading part of a glob without wildcards: ``/var/log/plc`` of ``/var/log/plc/*.csv``."""
    parts = []
    for part in Path(pattern).parts:
        if any(char in part for char in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _drop_directory_findings(config: FilesConfig) -> list[Finding]:
    directory = config.directory
    assert directory is not None
    key, shown = ("directory",), repr(str(directory))
    if not directory.exists():
        return [Finding("error", key, "does not exist; create it (the daemon does not)", shown)]
    if not directory.is_dir():
        return [Finding("error", key, "is not a directory", shown)]
    if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        return [
            Finding(
                "error",
                key,
                f"must be readable and writable by this user (uid {os.geteuid()}): ingested "
                "files are moved away or deleted",
                shown,
            )
        ]
    return []
