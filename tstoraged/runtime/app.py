"""The daemon: one :func:`run` owns the event loop; :class:`Daemon` wires the parts together.

Lifecycle:

- start: logging, metrics endpoint, pipeline, sources; then ``READY=1`` to systemd.
- SIGTERM / SIGINT: ``STOPPING=1``; sources are cancelled, everything buffered is flushed
  (bounded by ``[daemon] drain_timeout``), exit 0. What could not be delivered in time was
  never acknowledged, so sources with positions (files, MQTT) deliver it again after a restart.
- SIGHUP: ``RELOADING=1``; the config file is read and validated again. A valid config is
  applied (sources added, removed or changed; batch, queue, retry and target settings) without
  losing buffered records, and ``reload_applied`` names every changed key; an invalid one
  (whatever plugin code raised while validating it) is refused with one ``reload_refused``
  event listing every problem, never rate-limited, and the daemon keeps running on the old
  config. Then ``READY=1`` again.

Signal handlers only set events; this module's main loop does the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from tstoraged.config import ConfigError, load_config
from tstoraged.config.model import MetricsSettings, Settings
from tstoraged.mapping.compile import compile_mapping
from tstoraged.observe.http import ObservabilityServer, Readiness, parse_listen
from tstoraged.observe.logging import configure_logging
from tstoraged.observe.metrics import Metrics
from tstoraged.pipeline.deadletter import DeadLetterFile
from tstoraged.pipeline.pipeline import DrainReport, Pipeline, Stage
from tstoraged.pipeline.spooled import SpoolStage
from tstoraged.plugins import PluginManager, installed_plugin_set, plugin_set_changes
from tstoraged.runtime import wiring
from tstoraged.runtime.context import CoreSourceContext, source_state_dir
from tstoraged.runtime.reload import changed_settings, unreloadable
from tstoraged.runtime.sdnotify import SystemdNotifier, status_loop, watchdog_loop
from tstoraged.runtime.startup import (
    EXIT_STARTUP_FAILED,
    StartupError,
    listen_failure,
    prepare_directories,
)
from tstoraged.runtime.supervisor import SourceSupervisor
from tstoraged.source import Source, SourceConfig
from tstoraged.spool import SpoolError

__all__ = ["Daemon", "DaemonResult", "run"]

log = structlog.get_logger("tstoraged")


@dataclass(frozen=True)
class DaemonResult:
    """How a daemon run ended."""

    exit_code: int
    drain: DrainReport | None = None


class Daemon:
    """Runs sources and pipeline from one validated :class:`Settings` (reloadable)."""

    def __init__(
        self,
        settings: Settings,
        plugins: PluginManager,
        *,
        config_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        notifier: SystemdNotifier | None = None,
        once: bool = False,
        configure_logs: bool = True,
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.config_path = config_path
        self.env = os.environ if env is None else env
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self.once = once
        """Stop by itself once every source has finished (one-shot imports)."""
        self.configure_logs = configure_logs
        self.metrics = Metrics()
        self.http: ObservabilityServer | None = None
        self._served_metrics: MetricsSettings | None = None
        """The ``[metrics]`` the endpoint serves (after a failed move: the old one)."""
        self.pipeline: Pipeline | None = None
        self.dead_letters: DeadLetterFile | None = None
        self.supervisor: SourceSupervisor | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._pipeline_task: asyncio.Task[None] | None = None
        self._spool_stage: SpoolStage | None = None
        self.sources: dict[str, Source] = {}
        """The running instance of each source, by name (for tools such as ``import``)."""

    # -- control (safe to call from signal handlers and tests) --------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop."""
        self._stop.set()

    def request_reload(self) -> None:
        """Re-read the config file at the next opportunity."""
        self._reload.set()

    @property
    def http_url(self) -> str | None:
        """Base URL of the metrics/status endpoint, once it is up."""
        return self.http.url if self.http is not None else None

    # -- the main loop ------------------------------------------------------------------------

    async def run(self) -> DaemonResult:
        """Run until stopped; returns the exit code and the drain report."""
        # Hundreds of thousands of records are alive at any time and none can form a cycle;
        # with the default threshold the cyclic GC rescans them every 700 allocations, which
        # cost a third of the daemon's CPU (benchmarks/RESULTS.md). Collect far less often.
        gc.set_threshold(100_000, 50, 1000)
        settings = self.settings
        if self.configure_logs:
            configure_logging(settings.log.level, settings.log.format)
        state_dir = settings.daemon.state_dir
        # Everything that can refuse to start is tried before the pipeline and the sources
        # run (a StartupError names the setting); nothing has been read yet then.
        prepare_directories(settings)
        dead_letter_file = settings.daemon.dead_letter.file or state_dir / "dead-letter.jsonl"
        self.dead_letters = DeadLetterFile(dead_letter_file, settings.daemon.dead_letter.max_size)
        try:
            await self._start_http(settings)
        except OSError as exc:
            raise listen_failure(settings.metrics.listen, exc) from None
        try:
            stage = await self._build_stage(settings)
        except BaseException:
            if self.http is not None:
                await self.http.stop()
            raise
        self.pipeline = Pipeline(
            target=wiring.target_settings(settings),
            batch=wiring.batch_settings(settings),
            queue=wiring.queue_settings(settings),
            retry=wiring.retry_settings(settings),
            dead_letters=self.dead_letters,
            observer=self.metrics,
            stage=stage,
        )
        self.metrics.outage = self.pipeline.writer.outage.describe
        self._pipeline_task = self.pipeline.start()
        self.supervisor = SourceSupervisor(self._make_source, self.metrics)
        background: list[asyncio.Task[None]] = []
        try:
            self.supervisor.start(settings.enabled_sources)
            log.info(
                "daemon_started",
                sources=[s.name for s in settings.enabled_sources],
                tstorage=f"{settings.tstorage.host}:{settings.tstorage.port}",
                write_mode=settings.tstorage.write_mode,
                metrics=self.http_url,
                state_dir=str(state_dir),
            )
            self.notifier.ready(status=self.metrics.summary_line())
            background = [
                asyncio.create_task(watchdog_loop(self.notifier), name="sd-watchdog"),
                asyncio.create_task(
                    status_loop(self.notifier, self.metrics.summary_line), name="sd-status"
                ),
            ]
            if self.once:
                background.append(asyncio.create_task(self._stop_when_sources_finish()))
            crashed = await self._serve()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        return await self._shutdown(crashed)

    async def _serve(self) -> bool:
        """Wait for stop and reload requests; True when the pipeline crashed."""
        assert self._pipeline_task is not None
        while True:
            stop = asyncio.ensure_future(self._stop.wait())
            reload = asyncio.ensure_future(self._reload.wait())
            done, _ = await asyncio.wait(
                {stop, reload, self._pipeline_task}, return_when=asyncio.FIRST_COMPLETED
            )
            stop.cancel()
            reload.cancel()
            if self._pipeline_task in done:
                exc = None if self._pipeline_task.cancelled() else self._pipeline_task.exception()
                log.critical("pipeline_crashed", error=repr(exc), exc_info=exc)
                return True
            if self._stop.is_set():
                return False
            self._reload.clear()
            await self.reload()

    async def _stop_when_sources_finish(self) -> None:
        assert self.supervisor is not None
        await self.supervisor.wait_all_finished()
        log.info("all_sources_finished")
        self.request_stop()

    async def _shutdown(self, crashed: bool) -> DaemonResult:
        assert self.pipeline is not None
        assert self.supervisor is not None
        self.notifier.stopping()
        timeout = self.settings.daemon.drain_timeout
        log.info("daemon_stopping", drain_timeout=timeout)
        await self.supervisor.stop(timeout=max(1.0, min(10.0, timeout)))
        report = await self.pipeline.drain(timeout)
        await self._close_stage()
        if self.http is not None:
            await self.http.stop()
        if self.dead_letters is not None:
            self.dead_letters.close()
        log.info(
            "daemon_stopped",
            drained=report.complete,
            undelivered_records=report.undelivered_records,
            spooled_records=report.spooled_records,
        )
        return DaemonResult(1 if crashed or report.error else 0, report)

    # -- reload -------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read and apply the config file; False (and the old config kept) when refused.

        Nothing a new config contains -- and no exception from plugin code validating or
        compiling it -- can end the daemon: every problem is logged in one ``reload_refused``
        event (never rate-limited) and the old config keeps running.
        """
        assert self.pipeline is not None
        assert self.supervisor is not None
        self.notifier.reloading()
        log.info("reload_requested", config=str(self.config_path))
        self._report_plugin_changes()
        try:
            new = load_config(self.config_path, env=self.env, plugins=self.plugins)
        except ConfigError as exc:
            return self._refuse_reload([str(problem) for problem in exc.problems])
        except Exception as exc:  # a bug in validation must not take the daemon down
            log.debug("reload_validation_crashed", exc_info=exc)
            return self._refuse_reload([f"validation failed: {type(exc).__name__}: {exc}"])
        old = self.settings
        refused = unreloadable(old, new)
        if refused:
            return self._refuse_reload(refused)
        try:
            # Everything that can fail (a TLS key that does not load) before anything changes.
            target = wiring.target_settings(new)
            batch = wiring.batch_settings(new)
            queue = wiring.queue_settings(new)
            retry = wiring.retry_settings(new)
        except Exception as exc:
            return self._refuse_reload([f"[tstorage]: {type(exc).__name__}: {exc}"])
        if self.configure_logs and new.log != old.log:
            configure_logging(new.log.level, new.log.format)
        self.pipeline.reconfigure(target=target, batch=batch, queue=queue, retry=retry)
        self.settings = new
        changes = await self.supervisor.apply(new.enabled_sources)
        for name in changes["removed"]:
            self.metrics.remove_source(name)
        problems = []
        if new.metrics != self._served_metrics:
            # Compared with what is served, not with the old config: a move that failed
            # (port in use) is tried again by the next reload.
            problems = await self._restart_http(new)
        settings = changed_settings(old, new)
        log.info(
            "reload_applied",
            **changes,
            settings=settings,
            nothing_changed=not settings and not any(changes.values()),
        )
        for problem in problems:
            log.error("reload_incomplete", problem=problem, rate_limit=False)
        self.notifier.ready(status=self.metrics.summary_line())
        return True

    def _report_plugin_changes(self) -> None:
        """Say so when plugins were installed, removed or upgraded since start.

        Python code already imported cannot be replaced safely in a running process, so a
        reload keeps the plugins loaded at start; the new set needs a restart.
        """
        if self.plugins.loaded_set is None:
            return
        changes = plugin_set_changes(self.plugins.loaded_set, installed_plugin_set(self.env))
        if any(changes.values()):
            log.warning(
                "plugins_changed",
                **changes,
                action="restart the daemon to load them; this reload keeps the plugins "
                "loaded at start",
                rate_limit=False,
            )

    def _refuse_reload(self, problems: list[str]) -> bool:
        log.error(
            "reload_refused",
            problems=problems,
            count=len(problems),
            config=str(self.config_path),
            rate_limit=False,
        )
        self.notifier.ready(status="config reload refused; running on the previous config")
        return False

    async def _restart_http(self, new: Settings) -> list[str]:
        """Move the metrics endpoint to the new ``[metrics]``; back where it was if that fails.

        "Where it was" is the address it had (with port 0 in the config, the port it was
        given), so clients of the old endpoint keep working.
        """
        previous = (self.http.host, self.http.port) if self.http is not None else None
        if self.http is not None:
            await self.http.stop()
            self.http = None
        try:
            await self._start_http(new)
        except OSError as exc:
            problem = f"metrics.listen = {new.metrics.listen!r}: cannot listen: {exc.strerror}"
            if previous is None:
                return [problem]
            try:
                await self._listen(*previous)
            except OSError as again:
                return [problem, f"the old metrics.listen failed too: {again.strerror}"]
            return [f"{problem}; still serving on {self.http_url}"]
        return []

    # -- parts --------------------------------------------------------------------------------

    def _make_source(self, config: SourceConfig) -> Source:
        assert self.pipeline is not None
        assert self.dead_letters is not None
        source_type = self.plugins.source_types[config.type]
        context = CoreSourceContext(
            config.name,
            mapping=compile_mapping(config, self.plugins.codecs),
            emit=self.pipeline.emitter(config.name),
            dead_letters=self.dead_letters,
            observer=self.metrics,
            reporter=self.metrics,
            state_dir=source_state_dir(self.settings.daemon.state_dir, config.name),
            durable_checkpoints=(
                self._spool_stage.recovered_checkpoints.get(config.name)
                if self._spool_stage is not None
                else None
            ),
        )
        for finding in config.check_environment():
            # What `tstoraged check` would say about this source (a glob matching nothing).
            report = context.log.error if finding.severity == "error" else context.log.warning
            report(
                "environment_problem_found",
                setting=finding.setting,
                value=finding.value,
                problem=finding.message,
            )
        source = source_type.source_class(config, context)
        self.sources[config.name] = source
        return source

    async def _start_http(self, settings: Settings) -> None:
        if settings.metrics.enabled:
            await self._listen(*parse_listen(settings.metrics.listen))
        self._served_metrics = settings.metrics

    async def _listen(self, host: str, port: int) -> None:
        http = ObservabilityServer(self.metrics, host=host, port=port, readiness=self.readiness)
        await http.start()
        self.http = http

    def readiness(self) -> Readiness:
        """Whether the daemon takes data; not ready names the first reason found.

        Ready when the pipeline runs, TStorage is reachable (or the spool takes the data), no
        source is failing (its ``run()`` raised and the restarted instance has not yet run for
        its ``restart.healthy_after``) and none reports a problem (``context.set_problem``).
        """
        if self._pipeline_task is None or self._pipeline_task.done():
            return Readiness(False, "pipeline not running")
        failing = self.supervisor.failing() if self.supervisor is not None else {}
        if failing:
            return Readiness(False, _first_of(failing, " failing: "))
        problems = self.metrics.source_problems()
        if problems:
            return Readiness(False, _first_of(problems, ": "))
        waiting = self._spool_stage.waiting_for() if self._spool_stage is not None else None
        if waiting is not None:
            return Readiness(False, waiting)
        connections = self.metrics.snapshot()["connections"]
        if not self.settings.spool.enabled and not any(connections.values()):
            return Readiness(False, "not connected to TStorage")
        return Readiness(True)

    async def _build_stage(self, settings: Settings) -> Stage | None:
        """The stage between batcher and writer: the disk spool when enabled, else memory."""
        spool = settings.spool
        if not spool.enabled:
            return None
        assert self.dead_letters is not None
        directory = spool.dir or settings.daemon.state_dir / "spool"
        try:
            self._spool_stage = await self._open_spool(settings, directory)
        except SpoolError as exc:
            cause = str(exc)
            if "in use" in cause:
                cause = "in use by another tstoraged process; each daemon needs its own spool.dir"
            raise StartupError("spool.dir", directory, cause) from None
        except OSError as exc:
            raise StartupError(
                "spool.dir", directory, f"cannot open: {exc.strerror or exc}"
            ) from None
        return self._spool_stage

    async def _open_spool(self, settings: Settings, directory: Path) -> SpoolStage:
        spool = settings.spool
        assert self.dead_letters is not None
        return await SpoolStage.open(
            directory,
            write_mode=settings.tstorage.write_mode,
            dead_letters=self.dead_letters,
            observer=self.metrics,
            max_size=spool.max_size,
            fsync=spool.fsync,
            fsync_interval=spool.fsync_interval,
            overflow=spool.overflow,
            min_free_space=spool.min_free_space,
        )

    async def _close_stage(self) -> None:
        """Close the stage's resources after the drain."""
        if self._spool_stage is not None:
            await self._spool_stage.aclose()
            self._spool_stage = None


def _first_of(reasons: Mapping[str, str], verb: str) -> str:
    """``source a failing: <error> (and 2 more)``: the first source's reason, and a count."""
    name, reason = next(iter(reasons.items()))
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"source {name}{verb}{reason}{more}"


def run(
    settings: Settings,
    plugins: PluginManager,
    *,
    config_path: Path | None = None,
    once: bool = False,
    **kwargs: Any,
) -> int:
    """Run the daemon; owns the event loop and the signal handlers. Returns the exit code."""

    async def main() -> int:
        daemon = Daemon(settings, plugins, config_path=config_path, once=once, **kwargs)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        try:
            result = await daemon.run()
        except StartupError as exc:
            # One line naming the setting and the cause; no traceback for an operator error.
            log.critical("daemon_start_failed", error=str(exc), setting=exc.setting)
            return EXIT_STARTUP_FAILED
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
        return result.exit_code

    return asyncio.run(main())
