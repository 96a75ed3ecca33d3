"""Metrics: the pipeline observer behind Prometheus series and the status snapshot."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from tstoraged import __version__
from tstoraged.observe.metrics import Metrics
from tstoraged.observe.rates import MovingRate
from tstoraged.observe.reasons import DEAD_LETTER_REASONS, REJECT_REASONS
from tstoraged.pipeline.observer import PipelineObserver


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mono() -> FakeClock:
    return FakeClock(500.0)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def metrics(mono: FakeClock, wall: FakeClock) -> Metrics:
    return Metrics(clock=mono, wall_clock=wall, process_metrics=False)


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_metrics_is_a_pipeline_observer(metrics: Metrics) -> None:
    observer: PipelineObserver = metrics  # checked by mypy against the protocol
    observer.records_received("s", 1)
    assert sample(metrics, "tstoraged_records_received_total", source="s") == 1


def test_per_source_record_counters(metrics: Metrics) -> None:
    metrics.records_received("a", 10)
    metrics.records_received("a", 5)
    metrics.records_received("b", 7)
    metrics.records_written("a", 12)
    metrics.records_rejected("a", 2, "mapping_failed")
    metrics.records_dead_lettered("b", 1, "invalid record: key.cid -1 is below 0")
    metrics.records_dropped("b", 3, "spool full (drop_oldest)")

    assert sample(metrics, "tstoraged_records_received_total", source="a") == 15
    assert sample(metrics, "tstoraged_records_received_total", source="b") == 7
    assert sample(metrics, "tstoraged_records_written_total", source="a") == 12
    rejected = "tstoraged_records_rejected_total"
    assert sample(metrics, rejected, source="a", reason="mapping_failed") == 2
    dead = "tstoraged_records_dead_lettered_total"
    assert sample(metrics, dead, source="b", reason="invalid_record") == 1
    # Rejected input is in the dead-letter file too, so it is counted there as well.
    assert sample(metrics, dead, source="a", reason="mapping_failed") == 2
    assert sample(metrics, "tstoraged_records_dropped_total", source="b", reason="spool_full") == 3
    assert metrics.snapshot()["sources"]["a"]["dead_lettered"] == 2
    assert metrics.snapshot()["sources"]["a"]["errors"] == 2


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("line longer than max_line_bytes=65536", "line_too_long"),
        ("undecodable bytes (utf-8) at column 17", "undecodable"),
        ("undecodable bytes (utf-8) at column 3", "undecodable"),
        ("expected 4 fields, got 3", "wrong_field_count"),
        ("CSV: unexpected end of data", "parse_error"),
        ("JSON: Expecting value: line 1 column 5 (char 4)", "parse_error"),
        ("not a JSON object but list", "parse_error"),
        ("no header line seen yet", "parse_error"),
        ("mapping_failed", "mapping_failed"),
        ("the meter said 42 was wrong", "invalid_input"),
    ],
)
def test_reject_reasons_become_a_fixed_set_of_labels(
    metrics: Metrics, reason: str, label: str
) -> None:
    metrics.records_rejected("csv", 1, reason)
    assert sample(metrics, "tstoraged_records_rejected_total", source="csv", reason=label) == 1
    assert sample(metrics, "tstoraged_records_dead_lettered_total", source="csv", reason=label) == 1


def test_labels_never_carry_values_and_nothing_is_lost(metrics: Metrics) -> None:
    for i in range(40):
        metrics.records_rejected("csv", 1, f"undecodable bytes (utf-8) at column {i}")
        metrics.records_rejected("csv", 1, f"bad value {i} in row {i}")
        metrics.records_dead_lettered("csv", 1, f"gave up after {i} attempts: DISCONNECTED")
        metrics.records_dead_lettered("csv", 1, f"refused by TStorage: ERROR (row {i})")
        metrics.write_retried(f"OSError: [Errno 111] Connect call failed ('127.0.0.1', {2000 + i})")

    def labels(counter: Any) -> dict[str, float]:
        return {
            s.labels["reason"]: s.value
            for family in counter.collect()
            for s in family.samples
            if s.name.endswith("_total")
        }

    assert labels(metrics.rejected.counter) == {"undecodable": 40, "invalid_input": 40}
    assert set(labels(metrics.rejected.counter)) <= set(REJECT_REASONS)
    dead = labels(metrics.dead_lettered.counter)
    assert dead == {"undecodable": 40, "invalid_input": 40, "gave_up": 40, "refused": 40}
    assert set(dead) <= set(DEAD_LETTER_REASONS)
    assert labels(metrics.retries_total) == {"connection_error": 40}


def test_batches_latency_and_last_successful_write(metrics: Metrics, wall: FakeClock) -> None:
    assert sample(metrics, "tstoraged_last_successful_write_timestamp_seconds") == 0
    metrics.batch_written(records=1000, nbytes=24000, seconds=0.004)
    wall.now += 60
    metrics.batch_written(records=10, nbytes=240, seconds=0.2)

    assert sample(metrics, "tstoraged_batches_written_total") == 2
    assert sample(metrics, "tstoraged_bytes_written_total") == 24240
    assert sample(metrics, "tstoraged_put_duration_seconds_count") == 2
    assert sample(metrics, "tstoraged_put_duration_seconds_bucket", le="0.005") == 1
    assert sample(metrics, "tstoraged_last_successful_write_timestamp_seconds") == wall.now


def test_retries_connection_queue_and_spool_gauges(metrics: Metrics) -> None:
    metrics.write_retried("DISCONNECTED")
    metrics.write_retried("DISCONNECTED")
    metrics.connection_state("db:2025", True)
    metrics.connection_state("db:2025", False)
    metrics.connection_state("db2:2025", True)
    metrics.queue_depth(1234, 56789)
    metrics.spool_state(4096, 3, 42.5)

    assert sample(metrics, "tstoraged_write_retries_total", reason="disconnected") == 2
    assert sample(metrics, "tstoraged_tstorage_connected", target="db:2025") == 0
    assert sample(metrics, "tstoraged_tstorage_connected", target="db2:2025") == 1
    assert sample(metrics, "tstoraged_queue_records") == 1234
    assert sample(metrics, "tstoraged_queue_bytes") == 56789
    assert sample(metrics, "tstoraged_spool_bytes") == 4096
    assert sample(metrics, "tstoraged_spool_batches") == 3
    assert sample(metrics, "tstoraged_spool_oldest_age_seconds") == 42.5

    metrics.spool_state(0, 0, None)
    assert sample(metrics, "tstoraged_spool_oldest_age_seconds") == 0


def test_version_info_and_process_metrics_in_a_private_registry() -> None:
    first = Metrics(version="9.9.9")
    second = Metrics()  # a second instance does not collide: each has its own registry
    text = generate_latest(first.registry).decode()
    assert 'tstoraged_build_info{version="9.9.9"} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert second.registry.get_sample_value("tstoraged_build_info", {"version": __version__}) == 1
    assert REGISTRY.get_sample_value("tstoraged_build_info", {"version": "9.9.9"}) is None


def test_source_state_drives_source_up_and_removal_drops_the_series(metrics: Metrics) -> None:
    metrics.source_state("mqtt", "running")
    metrics.records_received("mqtt", 3)
    metrics.records_rejected("mqtt", 1, "bad json")
    assert sample(metrics, "tstoraged_source_up", source="mqtt") == 1
    metrics.source_state("mqtt", "backoff")
    assert sample(metrics, "tstoraged_source_up", source="mqtt") == 0

    metrics.remove_source("mqtt")
    text = generate_latest(metrics.registry).decode()
    assert 'source="mqtt"' not in text
    assert "mqtt" not in metrics.snapshot()["sources"]
    metrics.records_received("mqtt", 1)  # a re-added source starts afresh
    assert sample(metrics, "tstoraged_records_received_total", source="mqtt") == 1


def test_moving_rate_counts_the_last_window(mono: FakeClock) -> None:
    rate = MovingRate(10, clock=mono)
    mono.now = 500.0
    rate.add(100)
    assert rate.rate() == 100  # one second observed so far
    for _ in range(9):
        mono.now += 1
        rate.add(100)
    assert rate.rate() == 100
    mono.now += 5  # five quiet seconds: half the window is empty
    assert rate.rate() == 50
    mono.now += 100
    assert rate.rate() == 0


def test_snapshot_is_json_and_has_rates_errors_and_ages(
    metrics: Metrics, mono: FakeClock, wall: FakeClock
) -> None:
    metrics.source_state("line-3", "running")
    for _ in range(10):
        metrics.records_received("line-3", 200)
        metrics.records_written("line-3", 100)
        mono.now += 1
    mono.now -= 1  # stay inside the tenth second
    metrics.records_rejected("line-3", 2, "mapping_failed")
    metrics.batch_written(100, 2400, 0.01)
    metrics.connection_state("db:2025", True)
    metrics.queue_depth(5, 120)

    snap = json.loads(json.dumps(metrics.snapshot()))
    src = snap["sources"]["line-3"]
    assert src["state"] == "running"
    assert src["received"] == 2000
    assert src["written"] == 1000
    assert src["errors"] == 2
    assert src["last_error"] == "mapping_failed"
    assert src["received_per_s"] == 200
    assert src["written_per_s"] == 100
    assert src["last_write"] == wall.now
    assert snap["received_per_s"] == 200
    assert snap["last_successful_write"] == wall.now
    assert snap["connections"] == {"db:2025": True}
    assert snap["queue"] == {"records": 5, "bytes": 120}
    assert snap["uptime_s"] == 9
    assert snap["version"] == __version__


def test_summary_line_for_systemctl_status(metrics: Metrics) -> None:
    assert "tstorage not connected yet" in metrics.summary_line()
    metrics.records_received("a", 12_345)
    metrics.connection_state("db:2025", True)
    metrics.spool_state(3 * 1024 * 1024, 7, 10.0)
    line = metrics.summary_line()
    assert "in 12.3k rec/s" in line
    assert "tstorage 1/1 connected" in line
    assert "spool 3.0 MiB in 7 batches" in line
    assert "\n" not in line
