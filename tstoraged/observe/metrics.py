"""Prometheus metrics and the in-process status snapshot, fed by the pipeline.

:class:`Metrics` implements :class:`tstoraged.pipeline.observer.PipelineObserver`. The pipeline
calls it per batch or per ``emit`` at up to a few hundred thousand records per second in total,
so every call is a dictionary lookup of a per-source object whose prometheus label children are
bound once, plus a few integer additions; no label lookups per call.

Metrics live in a dedicated :class:`prometheus_client.CollectorRegistry`, never the global
one, so tests and several daemons in one process do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from tstoraged import __version__
from tstoraged.observe.humanize import human_bytes, human_count
from tstoraged.observe.rates import MovingRate
from tstoraged.observe.reasons import dead_letter_reason, drop_reason, reject_reason, retry_reason
from tstoraged.observe.source_metrics import PluginMetricFamilies, SourceMetrics

__all__ = ["RUNNING", "Metrics", "SourceStats"]

_CACHED_REASONS = 4096
"""Reason texts whose counter child is cached; others are mapped to their label each time."""
RUNNING = "running"
"""The source state for which ``tstoraged_source_up`` is 1."""

# Put latency of one batch: sub-millisecond on loopback, seconds on a congested uplink.
_PUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _ReasonCounter:
    """A ``{source, reason}`` counter whose children are cached; reasons become fixed labels.

    ``label_of`` maps a reason's text to one of a fixed set (:mod:`.reasons`), so the number
    of series stays bounded whatever the reasons say.
    """

    def __init__(self, counter: Counter, label_of: Callable[[str], str]) -> None:
        self.counter = counter
        self.label_of = label_of
        self._children: dict[tuple[str, str], Any] = {}
        self._labels: set[tuple[str, str]] = set()

    def inc(self, source: str, reason: str, count: int) -> None:
        child = self._children.get((source, reason))
        if child is None:
            child = self._bind(source, reason)
        child.inc(count)

    def _bind(self, source: str, reason: str) -> Any:
        label = self.label_of(reason)
        child = self.counter.labels(source=source, reason=label)
        # Reasons may carry values (a key, a column): the cache of texts stays bounded.
        if len(self._children) < _CACHED_REASONS:
            self._children[(source, reason)] = child
        self._labels.add((source, label))
        return child

    def remove_source(self, source: str) -> None:
        for key in [k for k in self._children if k[0] == source]:
            del self._children[key]
        for labels in [pair for pair in self._labels if pair[0] == source]:
            self._labels.discard(labels)
            self.counter.remove(*labels)


class SourceStats:
    """Everything tracked for one source; label children bound once at creation."""

    __slots__ = (
        "dead_lettered",
        "details",
        "dropped",
        "failing",
        "failures",
        "failures_counter",
        "in_rate",
        "last_error",
        "last_error_at",
        "last_write",
        "out_rate",
        "problem",
        "received",
        "received_counter",
        "rejected",
        "restart_at",
        "restarts",
        "restarts_counter",
        "state",
        "up_gauge",
        "written",
        "written_counter",
    )

    def __init__(self, metrics: Metrics, name: str) -> None:
        self.received_counter = metrics.received_total.labels(source=name)
        self.written_counter = metrics.written_total.labels(source=name)
        self.up_gauge = metrics.source_up.labels(source=name)
        self.failures_counter = metrics.source_failures.labels(source=name)
        self.restarts_counter = metrics.source_restarts.labels(source=name)
        self.in_rate = MovingRate(metrics.rate_window, clock=metrics.clock)
        self.out_rate = MovingRate(metrics.rate_window, clock=metrics.clock)
        self.received = 0
        self.written = 0
        self.rejected = 0
        self.dead_lettered = 0
        self.dropped = 0
        self.last_write: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.state = "unknown"
        self.failures = 0
        """Times ``run()`` raised (since the daemon started)."""
        self.restarts = 0
        """Times a failed source was started again."""
        self.failing = False
        """Failed and not recovered yet (the daemon is not ready meanwhile)."""
        self.restart_at: float | None = None
        """Unix time of the next restart while in backoff."""
        self.problem: str | None = None
        """What the source itself reports it cannot do (``context.set_problem``)."""
        self.details: Mapping[str, Any] = {}
        """The source's own state (``context.set_details``)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able view used by ``/status``."""
        return {
            "state": self.state,
            "received": self.received,
            "written": self.written,
            "rejected": self.rejected,
            "dead_lettered": self.dead_lettered,
            "dropped": self.dropped,
            "failures": self.failures,
            "restarts": self.restarts,
            "failing": self.failing,
            "restart_at": self.restart_at,
            # Rejected input is dead-lettered too: counted once.
            "errors": self.dead_lettered + self.dropped + self.failures,
            "received_per_s": round(self.in_rate.rate(), 3),
            "written_per_s": round(self.out_rate.rate(), 3),
            "last_write": self.last_write,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "problem": self.problem,
            "details": dict(self.details),
        }


class Metrics:
    """The daemon's metrics: a :class:`PipelineObserver` plus status bookkeeping.

    ``clock`` (monotonic seconds) drives rates and uptime; ``wall_clock`` (unix seconds)
    stamps the last successful write. Both are injectable for tests.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        version: str = __version__,
        rate_window: int = 10,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.version = version
        self.rate_window = rate_window
        self.clock = clock
        self.wall_clock = wall_clock
        self._started = clock()
        self._started_at = wall_clock()
        self._sources: dict[str, SourceStats] = {}
        self._connections: dict[str, bool] = {}
        self._connection_gauges: dict[str, Any] = {}
        self._queue = (0, 0)
        self._spool: tuple[int, int, float | None] = (0, 0, None)
        self.batches_written = 0
        self.bytes_written = 0
        self.retries = 0
        self.outage: Callable[[], dict[str, Any] | None] = lambda: None
        """The current TStorage outage for ``/status`` (set by the runtime to the writer's
        outage log), or None while TStorage is reachable."""
        self.last_successful_write: float | None = None
        self._define(self.registry)
        self._plugin_families = PluginMetricFamilies(self.registry)
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def _define(self, r: CollectorRegistry) -> None:
        by_source = ["source"]
        by_reason = ["source", "reason"]
        self.received_total = Counter(
            "tstoraged_records_received", "Records emitted by a source.", by_source, registry=r
        )
        self.written_total = Counter(
            "tstoraged_records_written", "Records acknowledged by TStorage.", by_source, registry=r
        )
        self.rejected = _ReasonCounter(
            Counter(
                "tstoraged_records_rejected",
                "Source input that could not be parsed or mapped (dead-lettered).",
                by_reason,
                registry=r,
            ),
            reject_reason,
        )
        self.dead_lettered = _ReasonCounter(
            Counter(
                "tstoraged_records_dead_lettered",
                "Entries written to the dead-letter file: rejected input, and records refused "
                "by TStorage, invalid, or given up on.",
                by_reason,
                registry=r,
            ),
            dead_letter_reason,
        )
        self.dropped = _ReasonCounter(
            Counter(
                "tstoraged_records_dropped",
                "Records dropped on purpose (e.g. spool overflow with drop_oldest).",
                by_reason,
                registry=r,
            ),
            drop_reason,
        )
        self.spool_lost = Counter(
            "tstoraged_spool_records_lost",
            "Acknowledged records lost to spool damage that no source could replay.",
            by_reason,
            registry=r,
        )
        self._spool_lost: dict[str, int] = {}
        self.source_up = Gauge(
            "tstoraged_source_up", "1 while the source is running, else 0.", by_source, registry=r
        )
        self.source_failures = Counter(
            "tstoraged_source_failures",
            "Times a source's run() raised (each is followed by a restart after a backoff).",
            by_source,
            registry=r,
        )
        self.source_restarts = Counter(
            "tstoraged_source_restarts",
            "Times a failed source was started again.",
            by_source,
            registry=r,
        )
        self.batches_total = Counter(
            "tstoraged_batches_written", "Batches acknowledged by TStorage.", registry=r
        )
        self.bytes_total = Counter(
            "tstoraged_bytes_written", "Record bytes acknowledged by TStorage.", registry=r
        )
        self.put_seconds = Histogram(
            "tstoraged_put_duration_seconds",
            "Latency of the successful put of one batch.",
            buckets=_PUT_BUCKETS,
            registry=r,
        )
        self.retries_total = Counter(
            "tstoraged_write_retries",
            "Write attempts that failed transiently and were retried.",
            ["reason"],
            registry=r,
        )
        self._retry_children: dict[str, Any] = {}
        self.connected = Gauge(
            "tstoraged_tstorage_connected",
            "1 while the channel to the TStorage target is connected.",
            ["target"],
            registry=r,
        )
        self.last_write_gauge = Gauge(
            "tstoraged_last_successful_write_timestamp_seconds",
            "Unix time of the last batch acknowledged by TStorage (0: none yet).",
            registry=r,
        )
        self.queue_records = Gauge(
            "tstoraged_queue_records", "Records buffered in memory.", registry=r
        )
        self.queue_bytes = Gauge("tstoraged_queue_bytes", "Bytes buffered in memory.", registry=r)
        self.spool_bytes = Gauge("tstoraged_spool_bytes", "Size of the disk spool.", registry=r)
        self.spool_batches = Gauge(
            "tstoraged_spool_batches", "Batches waiting in the disk spool.", registry=r
        )
        self.spool_oldest = Gauge(
            "tstoraged_spool_oldest_age_seconds",
            "Age of the oldest spooled batch (0 when the spool is empty).",
            registry=r,
        )
        self.start_time = Gauge(
            "tstoraged_start_time_seconds", "Unix time the daemon started.", registry=r
        )
        self.start_time.set(self._started_at)
        Info("tstoraged_build", "Version of the running daemon.", registry=r).info(
            {"version": self.version}
        )

    # -- per-source bookkeeping -------------------------------------------------------------

    def _source(self, name: str) -> SourceStats:
        stats = self._sources.get(name)
        if stats is None:
            stats = self._sources[name] = SourceStats(self, name)
        return stats

    def source_state(self, source: str, state: str) -> None:
        """Record a source's lifecycle state ("starting", "running", "backoff", "stopped", ...).

        Not part of the observer protocol: the app calls it when it starts, restarts or stops
        a source. ``tstoraged_source_up`` is 1 exactly in state :data:`RUNNING`.
        """
        stats = self._source(source)
        stats.state = state
        stats.up_gauge.set(1 if state == RUNNING else 0)
        if state == "starting":
            stats.problem = None  # a new instance reports its own problems
        if state != "backoff":
            stats.restart_at = None

    def source_failed(self, source: str, error: str, *, restart_in: float) -> None:
        """The source's ``run()`` raised ``error``; it restarts in ``restart_in`` seconds."""
        stats = self._source(source)
        stats.failures += 1
        stats.failures_counter.inc()
        stats.failing = True
        stats.restart_at = self.wall_clock() + restart_in
        self._note_error(stats, error)

    def source_restarted(self, source: str) -> None:
        """A failed source was started again (it is failing until it recovers)."""
        stats = self._source(source)
        stats.restarts += 1
        stats.restarts_counter.inc()

    def source_recovered(self, source: str) -> None:
        """A restarted source ran long enough to count as healthy."""
        self._source(source).failing = False

    def source_problem(self, source: str, problem: str | None) -> None:
        """What a source reports it cannot do right now (``None``: it can again)."""
        self._source(source).problem = None if problem is None else str(problem)[:500]

    def source_details(self, source: str, details: Mapping[str, Any]) -> None:
        """The source's own state, shown by ``/status`` (replaces what it reported before)."""
        self._source(source).details = dict(details)

    def source_metrics(self, source: str) -> SourceMetrics:
        """The counters and gauges a source defines for itself (``context.metrics``)."""
        return self._plugin_families.for_source(source)

    def source_problems(self) -> dict[str, str]:
        """Sources that currently report a problem, with the problem."""
        return {
            name: stats.problem
            for name, stats in sorted(self._sources.items())
            if stats.problem is not None
        }

    def remove_source(self, source: str) -> None:
        """Forget a source removed by a config reload (its series disappear from /metrics)."""
        self._plugin_families.remove_source(source)
        if self._sources.pop(source, None) is None:
            return
        for family in (
            self.received_total,
            self.written_total,
            self.source_up,
            self.source_failures,
            self.source_restarts,
        ):
            family.remove(source)
        for reasons in (self.rejected, self.dead_lettered, self.dropped):
            reasons.remove_source(source)

    # -- PipelineObserver ---------------------------------------------------------------------

    def records_received(self, source: str, count: int) -> None:
        """A source emitted ``count`` records into the pipeline."""
        stats = self._sources.get(source) or self._source(source)
        stats.received += count
        stats.received_counter.inc(count)
        stats.in_rate.add(count)

    def records_written(self, source: str, count: int) -> None:
        """TStorage acknowledged ``count`` records of ``source``."""
        stats = self._sources.get(source) or self._source(source)
        stats.written += count
        stats.written_counter.inc(count)
        stats.out_rate.add(count)
        stats.last_write = self.wall_clock()

    def records_rejected(self, source: str, count: int, reason: str) -> None:
        """Input of a source was malformed or unmappable and was dead-lettered.

        Counted as rejected *and* as dead-lettered: the dead-letter counters and ``/status``
        ``dead_lettered`` agree with the lines in the dead-letter file.
        """
        stats = self._sources.get(source) or self._source(source)
        stats.rejected += count
        stats.dead_lettered += count
        self._note_error(stats, reason)
        self.rejected.inc(source, reason, count)
        self.dead_lettered.inc(source, reject_reason(reason), count)

    def records_dead_lettered(self, source: str, count: int, reason: str) -> None:
        """Records were refused by TStorage or invalid, and went to the dead-letter file."""
        stats = self._sources.get(source) or self._source(source)
        stats.dead_lettered += count
        self._note_error(stats, reason)
        self.dead_lettered.inc(source, reason, count)

    def records_dropped(self, source: str, count: int, reason: str) -> None:
        """Records were dropped on purpose (e.g. spool overflow with ``drop_oldest``)."""
        stats = self._sources.get(source) or self._source(source)
        stats.dropped += count
        self._note_error(stats, reason)
        self.dropped.inc(source, reason, count)

    def spool_records_lost(self, source: str, count: int, reason: str) -> None:
        """Acknowledged records were lost to spool damage and cannot be replayed."""
        stats = self._sources.get(source) or self._source(source)
        self._note_error(stats, f"{count} records lost in the spool ({reason})")
        self._spool_lost[source] = self._spool_lost.get(source, 0) + count
        self.spool_lost.labels(source=source, reason=reason).inc(count)

    def _note_error(self, stats: SourceStats, reason: str) -> None:
        stats.last_error = reason[:200]
        stats.last_error_at = self.wall_clock()

    def batch_written(self, records: int, nbytes: int, seconds: float) -> None:
        """One batch was written; ``seconds`` is the put latency of the successful attempt."""
        self.batches_written += 1
        self.bytes_written += nbytes
        self.batches_total.inc()
        self.bytes_total.inc(nbytes)
        self.put_seconds.observe(seconds)
        now = self.last_successful_write = self.wall_clock()
        self.last_write_gauge.set(now)

    def write_retried(self, reason: str) -> None:
        """A write attempt failed transiently and will be retried."""
        self.retries += 1
        child = self._retry_children.get(reason)
        if child is None:
            child = self.retries_total.labels(reason=retry_reason(reason))
            if len(self._retry_children) < _CACHED_REASONS:  # texts may carry addresses
                self._retry_children[reason] = child
        child.inc()

    def connection_state(self, target: str, connected: bool) -> None:
        """The channel to ``target`` ("host:port") connected or disconnected."""
        self._connections[target] = connected
        gauge = self._connection_gauges.get(target)
        if gauge is None:
            gauge = self._connection_gauges[target] = self.connected.labels(target=target)
        gauge.set(1 if connected else 0)

    def queue_depth(self, records: int, nbytes: int) -> None:
        """Records/bytes buffered between sources and writer (in memory)."""
        self._queue = (records, nbytes)
        self.queue_records.set(records)
        self.queue_bytes.set(nbytes)

    def spool_state(self, nbytes: int, batches: int, oldest_age_s: float | None) -> None:
        """Size of the disk spool backlog, and age of its oldest batch."""
        self._spool = (nbytes, batches, oldest_age_s)
        self.spool_bytes.set(nbytes)
        self.spool_batches.set(batches)
        self.spool_oldest.set(oldest_age_s or 0.0)

    # -- status -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the daemon for ``/status`` and ``tstoraged status``."""
        sources = {name: stats.as_dict() for name, stats in sorted(self._sources.items())}
        spool_bytes, spool_batches, spool_oldest = self._spool
        return {
            "version": self.version,
            "now": self.wall_clock(),
            "started_at": self._started_at,
            "uptime_s": round(self.clock() - self._started, 3),
            "received_per_s": round(sum(s["received_per_s"] for s in sources.values()), 3),
            "written_per_s": round(sum(s["written_per_s"] for s in sources.values()), 3),
            "sources": sources,
            "queue": {"records": self._queue[0], "bytes": self._queue[1]},
            "connections": dict(self._connections),
            "outage": self.outage(),
            "last_successful_write": self.last_successful_write,
            "batches_written": self.batches_written,
            "bytes_written": self.bytes_written,
            "retries": self.retries,
            "spool": {
                "bytes": spool_bytes,
                "batches": spool_batches,
                "oldest_age_s": spool_oldest,
                "records_lost": dict(self._spool_lost),
            },
        }

    def summary_line(self) -> str:
        """One short line of live throughput, for sd_notify ``STATUS=`` (``systemctl status``)."""
        rate_in = sum(s.in_rate.rate() for s in self._sources.values())
        rate_out = sum(s.out_rate.rate() for s in self._sources.values())
        if not self._connections:
            link = "tstorage not connected yet"
        else:
            up = sum(self._connections.values())
            link = f"tstorage {up}/{len(self._connections)} connected"
        parts = [
            f"in {human_count(rate_in)} rec/s",
            f"written {human_count(rate_out)} rec/s",
            f"queue {human_count(self._queue[0])} rec",
            link,
        ]
        if self._spool[1]:
            parts.append(f"spool {human_bytes(self._spool[0])} in {self._spool[1]} batches")
        return ", ".join(parts)
