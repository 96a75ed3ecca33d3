"""Runs the configured sources: one task each, restarted with backoff when one fails.

One failing source never stops the others. When ``run()`` raises, the supervisor

- logs ``source_failed`` (the first failure of an episode always, with its traceback; repeats
  of the same error are rate-limited like any error) and counts it
  (``tstoraged_source_failures_total{source}``);
- marks the source *failing*: the daemon is not ready, ``tstoraged status`` and ``/status``
  show the error, the failure count and the state (``backoff`` while it waits);
- starts a new instance after the source's ``restart.delay``, doubling up to
  ``restart.max_delay`` (``source_restarted``, ``tstoraged_source_restarts_total{source}``);
- once a restarted instance has run ``restart.healthy_after`` without failing, logs
  ``source_recovered`` with how many failures and how long it was down, and the source is
  healthy again (ready; the next failure waits ``restart.delay`` again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from tstoraged.source import Source, SourceConfig

__all__ = ["SourceSupervisor", "SupervisorReporter"]

log = structlog.get_logger("tstoraged.supervisor")

SourceFactory = Callable[[SourceConfig], Source]


class SupervisorReporter(Protocol):
    """Where the supervisor reports (the daemon's :class:`tstoraged.observe.metrics.Metrics`)."""

    def source_state(self, source: str, state: str) -> None:
        """Lifecycle state: starting, running, backoff, stopped, finished."""

    def source_failed(self, source: str, error: str, *, restart_in: float) -> None:
        """``run()`` raised ``error``; a restart follows in ``restart_in`` seconds."""

    def source_restarted(self, source: str) -> None:
        """A new instance of a failed source was started."""

    def source_recovered(self, source: str) -> None:
        """A restarted source ran long enough to count as healthy again."""


@dataclass
class _Health:
    """The failure episode of one source (empty while it is healthy)."""

    failures: int = 0
    """Consecutive failures since the source was last healthy."""
    last_error: str | None = None
    failing_since: float | None = None
    """Monotonic time of the first failure of the episode; None while healthy."""

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


@dataclass(eq=False)
class _Running:
    config: SourceConfig
    task: asyncio.Task[None]
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    health: _Health = field(default_factory=_Health)


class SourceSupervisor:
    """Starts, restarts and stops source tasks; applies a new source list on reload."""

    def __init__(self, factory: SourceFactory, reporter: SupervisorReporter) -> None:
        self._factory = factory
        self._reporter = reporter
        self._running: dict[str, _Running] = {}

    @property
    def names(self) -> list[str]:
        """Names of the supervised sources."""
        return list(self._running)

    def failing(self) -> dict[str, str]:
        """Sources that failed and have not recovered yet, with their last error."""
        return {
            name: running.health.last_error or "failed"
            for name, running in self._running.items()
            if running.health.failing
        }

    def states_ok(self) -> bool:
        """True when no source is failing (for readiness)."""
        return not self.failing()

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
        health = _Health()
        task = asyncio.create_task(
            self._supervise(config, finished, health), name=f"source:{config.name}"
        )
        self._running[config.name] = _Running(config, task, finished, health)

    async def _supervise(
        self, config: SourceConfig, finished: asyncio.Event, health: _Health
    ) -> None:
        policy = config.restart
        name = config.name
        bound = log.bind(source=name, type=config.type)
        delay = policy.delay
        loop = asyncio.get_running_loop()
        while True:
            self._reporter.source_state(name, "starting")
            started = time.monotonic()
            healthy_timer: asyncio.TimerHandle | None = None
            try:
                source = self._factory(config)
                self._reporter.source_state(name, "running")
                if health.failing:
                    self._reporter.source_restarted(name)
                    bound.info("source_restarted", failures=health.failures)
                    healthy_timer = loop.call_later(
                        policy.healthy_after, self._recovered, name, health, bound
                    )
                else:
                    bound.info("source_started")
                await source.run()
            except asyncio.CancelledError:
                self._reporter.source_state(name, "stopped")
                raise
            except Exception as exc:
                if time.monotonic() - started >= policy.healthy_after:
                    delay = policy.delay
                self._failed(name, health, exc, delay, bound)
                await asyncio.sleep(delay)
                delay = min(delay * 2, policy.max_delay)
            else:
                if health.failing:
                    self._recovered(name, health, bound)
                self._reporter.source_state(name, "finished")
                bound.info("source_finished")
                finished.set()
                return
            finally:
                if healthy_timer is not None:
                    healthy_timer.cancel()

    def _failed(
        self,
        name: str,
        health: _Health,
        exc: Exception,
        restart_in: float,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        edge = not health.failing
        if edge:
            health.failing_since = time.monotonic()
        health.failures += 1
        changed = error != health.last_error
        health.last_error = error
        self._reporter.source_failed(name, error, restart_in=restart_in)
        self._reporter.source_state(name, "backoff")
        # The edge (healthy -> failing) is always logged, with the traceback; repeats of the
        # same error go through the rate limiter like any error, a new error is its own key.
        bound.error(
            "source_failed",
            error=error,
            failures=health.failures,
            restart_in=restart_in,
            exc_info=exc if edge or changed else None,
            **({"rate_limit": False} if edge else {}),
        )

    def _recovered(
        self, name: str, health: _Health, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        if health.failing_since is None:
            return
        down = time.monotonic() - health.failing_since
        bound.info(
            "source_recovered",
            failures=health.failures,
            down_s=round(down, 3),
            last_error=health.last_error,
        )
        self._reporter.source_recovered(name)
        health.failures = 0
        health.failing_since = None

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
