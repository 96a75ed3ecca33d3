"""The ``files`` source plugin: tail growing files or ingest dropped files, with exact resume.

Registered through the ``tstoraged`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from tstoraged import SourceType, hookimpl
from tstoraged_files.config import CsvOptions, FilesConfig
from tstoraged_files.source import FilesSource

__all__ = ["CsvOptions", "FilesConfig", "FilesSource", "tstoraged_source_types"]


@hookimpl
def tstoraged_source_types() -> list[SourceType]:
    """The ``files`` source type."""
    return [
        SourceType(
            "files",
            FilesSource,
            FilesConfig,
            "Tail growing files or ingest files dropped into a directory "
            "(CSV, JSON Lines, record CSV), resuming exactly after restarts and rotations.",
        )
    ]
