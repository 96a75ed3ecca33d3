"""Runs the configured sources: one task each, restarted with backoff when one fails.

One failing source never stops the others: its exception is logged, its state shows
``backoff`` in metrics and ``tstoraged status``, and it is started again after a delay that
doubles up to a minute (and resets once it has run for a while).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from tstoraged.source import Source, SourceConfig

__all__ = ["SourceSupervisor"]

log = structlog.get_logger("tstoraged.supervisor")

RESTART_MIN = 1.0
RESTART_MAX = 60.0
HEALTHY_AFTER = 60.0
"""A source that ran this long before failing restarts after the minimum delay again."""

SourceFactory = Callable[[SourceConfig], Source]
StateHook = Callable[[str, str], None]


@dataclass(eq=False)
class _Running:
    config: SourceConfig
    task: asyncio.Task[None]
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class SourceSupervisor:
    """Starts, restarts and stops source tasks; applies a new source list on reload."""

    def __init__(self, factory: SourceFactory, on_state: StateHook) -> None:
        self._factory = factory
        self._on_state = on_state
        self._running: dict[str, _Running] = {}

    @property
    def names(self) -> list[str]:
        """Names of the supervised sources."""
        return list(self._running)

    def states_ok(self) -> bool:
        """True when no source is failing (for readiness)."""
        return not any(r.task.done() and not r.finished.is_set() for r in self._running.values())

    def all_finished(self) -> bool:
        """True when every source returned by itself (one-shot sources, e.g. imports)."""
        return all(r.finished.is_set() for r in self._running.values())

    async def wait_all_finished(self) -> None:
        """Wait until every source has returned by itself."""
        await asyncio.gather(*(r.finished.wait() for r in self._running.values()))

    def start(self, configs: Iterable[SourceConfig]) -> None:
        """Start a task for each config."""
        for config in configs:
            self._start(config)

    def _start(self, config: SourceConfig) -> None:
        finished = asyncio.Event()
        task = asyncio.create_task(self._supervise(config, finished), name=f"source:{config.name}")
        self._running[config.name] = _Running(config, task, finished)

    async def _supervise(self, config: SourceConfig, finished: asyncio.Event) -> None:
        delay = RESTART_MIN
        bound = log.bind(source=config.name, type=config.type)
        while True:
            self._on_state(config.name, "starting")
            started = time.monotonic()
            try:
                source = self._factory(config)
                self._on_state(config.name, "running")
                bound.info("source_started")
                await source.run()
            except asyncio.CancelledError:
                self._on_state(config.name, "stopped")
                raise
            except Exception as exc:
                if time.monotonic() - started >= HEALTHY_AFTER:
                    delay = RESTART_MIN
                self._on_state(config.name, "backoff")
                bound.error(
                    "source_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    restart_in=delay,
                    exc_info=exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX)
            else:
                self._on_state(config.name, "finished")
                bound.info("source_finished")
                finished.set()
                return

    async def stop(self, names: Iterable[str] | None = None, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109
        """Cancel the named sources (all by default); returns names that did not stop in time."""
        chosen = list(self._running) if names is None else list(names)
        tasks = {}
        for name in chosen:
            running = self._running.pop(name, None)
            if running is not None:
                running.task.cancel()
                tasks[running.task] = name
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        stuck = sorted(tasks[task] for task in pending)
        if stuck:
            log.error("sources_not_stopped", sources=stuck, timeout=timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("source_stop_failed", source=tasks[task], error=repr(task.exception()))
        return stuck

    async def apply(self, configs: Iterable[SourceConfig]) -> dict[str, list[str]]:
        """Make the running set match ``configs``: stop removed/changed, start added/changed."""
        wanted = {config.name: config for config in configs}
        removed = [name for name in self._running if name not in wanted]
        changed = [
            name
            for name, config in wanted.items()
            if name in self._running and self._running[name].config != config
        ]
        added = [name for name in wanted if name not in self._running]
        await self.stop(removed + changed)
        for name in changed + added:
            self._start(wanted[name])
        return {"added": added, "removed": removed, "changed": changed}
