"""What an environment check found: an error (the daemon cannot work so) or a warning.

``tstoraged check`` prints findings, and the daemon logs them when a source starts. A source
plugin reports its own through :meth:`tstoraged.SourceConfig.check_environment`::

    def check_environment(self) -> list[Finding]:
        if not self.device.exists():
            return [Finding("error", ("device",), "does not exist", repr(str(self.device)))]
        return []
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["Finding", "Severity"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One thing a check found, at the setting that would fix it."""

    severity: Severity
    """``error``: the daemon will not start or the setting cannot work; ``warning``: it may."""
    path: tuple[str | int, ...]
    """The setting concerned, e.g. ``("metrics", "listen")`` or ``("sources", 1, "paths", 0)``."""
    message: str
    """What was found, and what to do about it."""
    value: str | None = None
    """The setting's value as shown (a repr), if it helps."""

    @property
    def setting(self) -> str:
        """The key path in TOML notation: ``sources[1].paths[0]``."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text

    def under(self, prefix: Iterable[str | int]) -> Finding:
        """The same finding for a setting inside the table at ``prefix``."""
        return replace(self, path=(*prefix, *self.path))

    def __str__(self) -> str:
        where = self.setting
        if self.value is not None:
            where = f"{where} = {self.value}" if where else self.value
        return (
            f"{self.severity}: {where}: {self.message}"
            if where
            else f"{self.severity}: {self.message}"
        )
