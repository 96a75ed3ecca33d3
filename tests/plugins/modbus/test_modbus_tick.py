"""Polls start at their tick: woken ahead, the first requests are written at the instant.

Evidence from real pymodbus servers and the records' capture times (``capture_time =
"request"``: the moment each request was written): the first requests of all devices due at
one tick are written before any device sends its next request (which waits for the answer to
its first and its decoding), none is written before the tick, and on a shared line the
devices take turns in their configured order every round, a silent device's probe last.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from modbus_harness import Unit, pty_pair, serial_server, tcp_server
from source_harness import config, device, poller, records_of, running, tcp, until

from tstorage_client.timestamp import OFFSET_NS

INTERVAL = 0.5  # exact in binary: tick instants are exact multiples
INTERVAL_NS = 500_000_000
DEVICES = 3


def two_reads() -> list[dict[str, Any]]:
    """Two points that max_registers = 2 puts into two requests (addresses 0 and 2)."""
    return [
        {"name": "first", "address": 0, "type": "uint32", "moid": 1},
        {"name": "second", "address": 2, "type": "uint32", "moid": 2},
    ]


async def test_the_first_requests_of_a_tick_all_leave_before_any_next_request(
    tmp_path: Path,
) -> None:
    units = [Unit(1, holding={0: [0, mid, 0, 100 + mid]}) for mid in range(1, DEVICES + 1)]
    async with contextlib.AsyncExitStack() as stack:
        running_servers = [await stack.enter_async_context(tcp_server(u)) for u in units]
        settings = config(
            [
                {
                    "name": f"m{index + 1}",
                    "connection": tcp(server.port),
                    "mid": index + 1,
                    "max_registers": 2,
                    "points": two_reads(),
                }
                for index, server in enumerate(running_servers)
            ],
            capture_time="request",
            poll_groups={"default": {"interval": INTERVAL}},
        )
        async with running(settings, tmp_path) as (source, context):
            await until(
                lambda: all(len(records_of(context, m)) >= 10 for m in range(1, DEVICES + 1)),
                "five polls of every device",
            )

    assert all(p.schedule.lead > 0 for p in source.pollers)  # woken ahead of the tick
    # (tick -> moid -> capture times): moid 1 is the first request of a poll, moid 2 the next.
    caps: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for record in context.records:
        cap = record.key.cap + OFFSET_NS
        caps[cap // INTERVAL_NS][record.key.moid].append(cap)
    complete = [t for t, by in caps.items() if len(by[1]) == len(by[2]) == DEVICES]
    assert len(complete) >= 3
    for tick in complete:
        firsts, seconds = caps[tick][1], caps[tick][2]
        assert min(firsts) >= tick * INTERVAL_NS  # never before the tick
        assert max(firsts) <= min(seconds)  # every first request left before any second one
    # The first requests went through the gate: held ready, written at their instant.
    assert source.gate.written >= DEVICES
    assert source.gate.instants >= 1
    values = {r.key.mid: r.value for r in context.records if r.key.moid == 2}
    assert len(values) == DEVICES


async def test_a_shared_line_goes_in_device_order_every_round_and_a_silent_unit_last(
    tmp_path: Path,
) -> None:
    """Unit 1 is configured first but never answers: when it is probed, it goes after the
    others, and units 2 and 3 keep their order (and so their poll period) in every round."""
    units = [Unit(unit, holding={0: [0, unit, 0, unit]}) for unit in (1, 2, 3)]
    units[0].silent = True
    clock_offset = time.time() - time.monotonic()  # the server logs monotonic arrival times
    with pty_pair() as line:
        async with serial_server(line.device_side, *units) as server:
            settings = config(
                [
                    {
                        "name": f"m{unit}",
                        "connection": "bus",
                        "unit": unit,
                        "mid": unit,
                        "timeout": 0.1,
                        "retries": 0,
                        "backoff_max": 1.0,
                        "points": two_reads()[:1],
                    }
                    for unit in (1, 2, 3)
                ],
                connections={
                    "bus": {"transport": "serial", "port": line.master_side, "parity": "N"}
                },
                capture_time="request",
                poll_groups={"default": {"interval": INTERVAL}},
            )
            async with running(settings, tmp_path) as (source, context):
                await until(
                    lambda: len(server.units[1].requests) >= 4 and len(records_of(context, 3)) >= 8,
                    "the silent unit probed four times, a few rounds of the others",
                )
                arrivals = sorted(
                    (at + clock_offset, unit.unit_id)
                    for unit in server.units.values()
                    for at, *_ in unit.requests
                )
    assert device(source, "m1").state == "not_answering"
    rounds: dict[int, list[int]] = defaultdict(list)
    for at, unit_id in arrivals:
        rounds[int(at * 1e9) // INTERVAL_NS].append(unit_id)
    del rounds[min(rounds)]  # the first round: unit 1 was not known to be silent yet
    probed = [order for order in rounds.values() if 1 in order]
    assert len(probed) >= 3
    for order in rounds.values():
        healthy = [unit for unit in order if unit != 1]
        assert healthy == [2, 3][: len(healthy)]  # device order, every round
        if 1 in order:
            assert order[order.index(1) :] == [1]  # the probe after the others
    for name in ("m2", "m3"):
        assert poller(source, name).schedule.skipped_total == 0
