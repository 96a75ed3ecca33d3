"""Per-record cost of the compiled mapping (fields -> Record(Key, payload bytes)).

    .venv/bin/python benchmarks/bench_mapping.py [--rows 200000] [--batch 2000] [--repeat 5]

Rows are built up front (the source's work is not measured), then mapped in batches of
``--batch`` the way a source does, each batch's records dropped afterwards, with the garbage
collector on as in the daemon (``--gc off`` to see its share). Every batch is timed; each
scenario reports the median batch (robust against other processes on a shared machine; it
includes the young-generation collections, which happen every few hundred records) and the
best batch, as ns per record and records/s on one core. The "floor" row builds the same
records with no mapping at all (``Key`` and ``Record`` construction alone), which no mapping
can beat; the "exact path" row shows what the generated fast path saves.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from tstoraged_codecs import tstoraged_payload_codecs

from tstorage_client.record import Key, Record
from tstoraged.mapping import CompiledMapping, compile_mapping
from tstoraged.source import SourceConfig

CODECS = {codec.name: codec for codec in tstoraged_payload_codecs()}
UNIX_MS = 1_700_000_000_000

COMMON = {
    "key": {"cid": 7, "mid": "{meter}", "moid": "{channel}"},
    "cap": {"field": "ts", "unit": "ms"},
    "payload": {"format": "<if?", "fields": ["count", "temp", "ok"]},
}


def make_rows(count: int, *, text: bool) -> list[dict[str, Any]]:
    """Rows like a CSV export (all text) or a generator (native values)."""
    rng = random.Random(1)
    rows = []
    for i in range(count):
        row: dict[str, Any] = {
            "meter": rng.randrange(50),
            "channel": rng.randrange(8),
            "ts": UNIX_MS + i,
            "count": i,
            "temp": round(rng.uniform(-20, 80), 2),
            "ok": rng.random() > 0.02,
        }
        if text:
            row = {name: str(value).lower() for name, value in row.items()}
        rows.append(row)
    return rows


def mapping(**overrides: Any) -> CompiledMapping:
    config = SourceConfig.model_validate({"type": "bench", "name": "bench", **COMMON, **overrides})
    return compile_mapping(config, CODECS)


def batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


Batch = list[dict[str, Any]]
MapBatch = Callable[[Batch], object]


def one_by_one(map_one: Callable[..., Any]) -> MapBatch:
    """Map a batch calling a one-row function per row, as a source's loop would."""

    def run(batch: Batch) -> object:
        return [map_one(fields) for fields in batch]

    return run


def all_at_once(mapping: CompiledMapping) -> MapBatch:
    """Map a batch with one ``map_many`` call."""

    def run(batch: Batch) -> object:
        records, failures = mapping.map_many(batch)
        assert not failures, failures[:1]
        return records

    return run


def floor(batch: Batch) -> object:
    """Key and Record construction alone, from the row's values already converted."""
    tn = tuple.__new__
    payload = b"\x00" * 9
    return [
        tn(Record, (tn(Key, (7, row["meter"], row["channel"], row["ts"], -1)), payload))
        for row in batch
    ]


def measure(map_batch: MapBatch, rows: list[dict[str, Any]], size: int, repeat: int) -> list[float]:
    """ns per record of every batch of every run (each batch's records dropped after it)."""
    timings = []
    for _ in range(repeat):
        for batch in batches(rows, size):
            started = time.perf_counter_ns()
            records = map_batch(batch)
            timings.append((time.perf_counter_ns() - started) / len(batch))
            del records
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--gc", choices=["on", "off"], default="on", help="off: measure without the cyclic GC"
    )
    args = parser.parse_args()
    n, size, repeat = args.rows, args.batch, args.repeat

    text_rows = make_rows(n, text=True)
    native_rows = make_rows(n, text=False)
    common = mapping()
    iso = mapping(cap={"field": "ts", "unit": "iso8601"})
    iso_rows = [
        {**r, "ts": f"2023-11-14T22:13:{i % 60:02d}.{i % 1000:03d}Z"}
        for i, r in enumerate(text_rows)
    ]
    lookup = mapping(
        key={"cid": 7, "mid": {"field": "meter", "lookup": "meters"}, "moid": "{channel}"},
        lookups={"meters": {str(m): 1000 + m for m in range(50)}},
    )
    json_map = mapping(payload={"codec": "json", "fields": ["count", "temp", "ok"]})

    scenarios: list[tuple[str, MapBatch, list[dict[str, Any]]]] = [
        ("floor: Key+Record construction only", floor, native_rows),
        ("common, text fields, map_many", all_at_once(common), text_rows),
        ("common, text fields, map_one per row", one_by_one(common.map_one), text_rows),
        ("common, native fields, map_many", all_at_once(common), native_rows),
        ("common, native fields, map_one per row", one_by_one(common.map_one), native_rows),
        ("common, text fields, exact path only", one_by_one(common.exact), text_rows),
        ("lookup table for mid, text, map_many", all_at_once(lookup), text_rows),
        ("ISO 8601 cap, text, map_many", all_at_once(iso), iso_rows),
        ("json payload, native, map_many", all_at_once(json_map), native_rows),
    ]
    if args.gc == "off":
        gc.disable()
    print(f"python {platform.python_version()} on {platform.machine()}, nproc={os.cpu_count()}")
    print(f"rows={n} batch={size} repeat={repeat} gc={args.gc}\n")
    print("| scenario | ns/record (median batch) | best batch | records/s (median) |")
    print("| --- | ---: | ---: | ---: |")
    for name, map_batch, rows in scenarios:
        timings = measure(map_batch, rows, size, repeat)
        median = statistics.median(timings)
        print(f"| {name} | {median:,.0f} | {min(timings):,.0f} | {1e9 / median:,.0f} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
