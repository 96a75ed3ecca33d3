"""What the pipeline reports as it runs. Metrics, sd_notify STATUS and ``tstoraged status``
implement this; the pipeline knows nothing about them."""

from __future__ import annotations

from typing import Protocol


class PipelineObserver(Protocol):
    """Receives pipeline events. Every method must be cheap and must not raise."""

    def records_received(self, source: str, count: int) -> None:
        """A source emitted ``count`` records into the pipeline."""

    def records_rejected(self, source: str, count: int, reason: str) -> None:
        """Input of a source was malformed or unmappable and was dead-lettered."""

    def records_written(self, source: str, count: int) -> None:
        """TStorage acknowledged ``count`` records of ``source``."""

    def records_dead_lettered(self, source: str, count: int, reason: str) -> None:
        """Records were refused by TStorage or invalid, and went to the dead-letter file."""

    def records_dropped(self, source: str, count: int, reason: str) -> None:
        """Records were dropped on purpose (e.g. spool overflow with ``drop_oldest``)."""

    def spool_records_lost(self, source: str, count: int, reason: str) -> None:
        """Acknowledged records were lost to spool damage and cannot be replayed."""

    def batch_written(self, records: int, nbytes: int, seconds: float) -> None:
        """One batch was written; ``seconds`` is the put latency of the successful attempt."""

    def write_retried(self, reason: str) -> None:
        """A write attempt failed transiently and will be retried."""

    def connection_state(self, target: str, connected: bool) -> None:
        """The channel to ``target`` ("host:port") connected or disconnected."""

    def queue_depth(self, records: int, nbytes: int) -> None:
        """Records/bytes buffered between sources and writer (in memory)."""

    def spool_state(self, nbytes: int, batches: int, oldest_age_s: float | None) -> None:
        """Size of the disk spool backlog, and age of its oldest batch."""


class NullObserver:
    """An observer that ignores everything (tests, one-shot tools)."""

    def records_received(self, source: str, count: int) -> None:
        pass

    def records_rejected(self, source: str, count: int, reason: str) -> None:
        pass

    def records_written(self, source: str, count: int) -> None:
        pass

    def records_dead_lettered(self, source: str, count: int, reason: str) -> None:
        pass

    def records_dropped(self, source: str, count: int, reason: str) -> None:
        pass

    def spool_records_lost(self, source: str, count: int, reason: str) -> None:
        pass

    def batch_written(self, records: int, nbytes: int, seconds: float) -> None:
        pass

    def write_retried(self, reason: str) -> None:
        pass

    def connection_state(self, target: str, connected: bool) -> None:
        pass

    def queue_depth(self, records: int, nbytes: int) -> None:
        pass

    def spool_state(self, nbytes: int, batches: int, oldest_age_s: float | None) -> None:
        pass
