"""Built-in ``generator`` source: synthetic records at a configured rate and shape.

For demos, smoke tests and load tests. Each generated row has the fields

    meter    (int)   0 .. meters-1
    channel  (int)   0 .. channels-1
    seq      (int)   a running counter, unique per generated row
    value    (float) a noisy sine wave per meter/channel
    count    (int)   seq modulo 2^31
    ok       (bool)  False for roughly one row in fifty
    ts       (int)   generation time, Unix ns (one row every 1/rate s)

which the source's mapping turns into records like any other source's fields. Without an
explicit mapping: ``key = { cid = 1, mid = "{meter}", moid = "{channel}" }``,
``cap = { field = "ts", unit = "ns" }``, ``payload = { format = "<d", fields = ["value"] }``.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from typing import Any

from pydantic import Field

from tstoraged import Source, SourceConfig, SourceType, hookimpl
from tstoraged.mapping.model import CapMapping, KeyMapping, PayloadMapping

__all__ = ["GeneratorConfig", "GeneratorSource", "tstoraged_source_types"]


class GeneratorConfig(SourceConfig):
    """``type = "generator"``: synthetic records."""

    key: KeyMapping = Field(
        default_factory=lambda: KeyMapping(cid=1, mid="{meter}", moid="{channel}"),
        description="How fields become cid, mid and moid.",
    )
    cap: CapMapping = Field(
        default_factory=lambda: CapMapping(field="ts", unit="ns"),
        description="How the capture time is found.",
    )
    payload: PayloadMapping = Field(
        default_factory=lambda: PayloadMapping.model_validate(
            {"codec": "struct", "format": "<d", "fields": ["value"]}
        ),
        description="How fields become the payload bytes.",
    )
    rate: float = Field(
        default=1000.0, ge=0, description="Rows per second; 0 means as fast as the pipeline takes."
    )
    count: int = Field(default=0, ge=0, description="Stop after this many rows; 0 means never.")
    meters: int = Field(default=10, ge=1, le=2**31 - 1, description="Distinct meter ids.")
    channels: int = Field(default=4, ge=1, le=2**31 - 1, description="Distinct channels per meter.")
    chunk: int = Field(default=2000, ge=1, le=1_000_000, description="Rows per emit call.")
    seed: int | None = Field(default=None, description="Random seed, for reproducible runs.")


class GeneratorSource(Source):
    """Emits rows in chunks, paced to ``rate`` with a token bucket on the monotonic clock."""

    config: GeneratorConfig

    async def run(self) -> None:
        cfg = self.config
        ctx = self.context
        rng = random.Random(cfg.seed)
        meters, channels = cfg.meters, cfg.channels
        combos = meters * channels
        seq = 0
        started = time.monotonic()
        started_ns = time.time_ns()
        period_ns = 1e9 / cfg.rate if cfg.rate > 0 else 0.0
        next_ns = 0
        phase = [rng.random() * math.tau for _ in range(min(combos, 4096))]
        while cfg.count == 0 or seq < cfg.count:
            n = cfg.chunk if cfg.count == 0 else min(cfg.chunk, cfg.count - seq)
            if cfg.rate > 0:
                # Never run ahead of the schedule: wait until the chunk's last row is due.
                due = started + (seq + n) / cfg.rate
                delay = due - time.monotonic()
                if delay > 0:
                    n = min(n, max(1, int(cfg.rate * 0.1)))  # pace in steps of <= 100 ms
                    due = started + (seq + n) / cfg.rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            # Capture times follow the schedule (one row every 1/rate s), or at full speed are
            # spaced at least 1 us apart and never repeat, so that no two rows share a key.
            if period_ns:
                base_ns = started_ns + int(seq * period_ns)
            else:
                base_ns = max(time.time_ns(), next_ns)
                next_ns = base_ns + n * 1000
            rows = []
            rand = rng.random
            for i in range(seq, seq + n):
                combo = i % combos
                meter, channel = divmod(combo, channels)
                row: dict[str, Any] = {
                    "meter": meter,
                    "channel": channel,
                    "seq": i,
                    "value": math.sin(i * 0.001 + phase[combo % len(phase)]) * 100.0 + rand(),
                    "count": i & 0x7FFFFFFF,
                    "ok": rand() >= 0.02,
                    "ts": base_ns + (int((i - seq) * period_ns) if period_ns else (i - seq) * 1000),
                }
                rows.append(row)
            records = ctx.map_many(rows, origin_of=functools.partial(_origin, seq))
            seq += n
            await ctx.emit(records)


def _origin(first: int, index: int) -> str:
    return f"generator:{first + index}"


@hookimpl
def tstoraged_source_types() -> list[SourceType]:
    """Register the ``generator`` source type."""
    return [
        SourceType(
            "generator",
            GeneratorSource,
            GeneratorConfig,
            "Synthetic records at a configured rate and shape (demos, load tests).",
        )
    ]
