"""What a config reload changes, and what it cannot change (pure functions of two Settings).

The daemon logs ``reload_applied`` with the key paths that changed -- core settings and each
source's own keys -- so an operator sees that ``batch.flush_interval`` took effect, and
``reload_refused`` with every problem when a change needs a restart. Values are not logged:
only key paths (a changed value may be a secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tstoraged.config.errors import format_path
from tstoraged.config.model import Settings
from tstoraged.source import SourceConfig

__all__ = ["changed_keys", "changed_settings", "unreloadable"]


def changed_keys(old: Any, new: Any, prefix: tuple[str | int, ...] = ()) -> list[str]:
    """Key paths (``"batch.flush_interval"``) whose values differ between two dumped tables.

    Tables are compared key by key; anything else (numbers, strings, arrays) as a whole.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[str] = []
        for key in sorted({*old, *new}, key=str):
            if key not in old or key not in new:
                paths.append(format_path((*prefix, key)))
            else:
                paths += changed_keys(old[key], new[key], (*prefix, key))
        return paths
    return [] if old == new else [format_path(prefix)]


def _dump(model: Settings | SourceConfig) -> dict[str, Any]:
    # Python mode keeps SecretStr objects, which compare by value and never print it.
    return model.model_dump(
        mode="python", exclude={"sources"} if isinstance(model, Settings) else None
    )


def changed_settings(old: Settings, new: Settings) -> list[str]:
    """Every changed key path: core settings, then ``sources.<name>.<key>`` of kept sources.

    Sources that were added or removed are not listed here (the supervisor names them).
    """
    paths = changed_keys(_dump(old), _dump(new))
    old_sources = {source.name: source for source in old.sources}
    for source in new.sources:
        before = old_sources.get(source.name)
        if before is not None and before != source:
            if type(before) is not type(source):
                paths.append(f"sources.{source.name}.type")
                continue
            paths += changed_keys(_dump(before), _dump(source), ("sources", source.name))
    return paths


def unreloadable(old: Settings, new: Settings) -> list[str]:
    """Changes a running daemon cannot apply; a restart is needed for them."""
    problems = []
    if old.tstorage.write_mode != new.tstorage.write_mode:
        problems.append("tstorage.write_mode cannot change on reload; restart the daemon")
    if old.daemon.state_dir != new.daemon.state_dir:
        problems.append("daemon.state_dir cannot change on reload; restart the daemon")
    if old.daemon.dead_letter != new.daemon.dead_letter:
        problems.append("[daemon.dead_letter] cannot change on reload; restart the daemon")
    if old.spool != new.spool:
        problems.append("[spool] cannot change on reload; restart the daemon")
    return problems
