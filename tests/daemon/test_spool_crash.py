"""kill -9 of a process appending in a loop: every batch acknowledged as durable survives."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import textwrap
import time

import pytest

from tstoraged.spool import Spool

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from tstoraged.spool import Spool

    def payload(i):
        # Sizes from tiny to ~300 KiB, so both the inline and the threaded write path run.
        return (b"%08d" % i) * ((i * 7919) % 37000 + 1)

    async def main(directory, first, fsync):
        spool = await Spool.open(directory, fsync=fsync, fsync_interval=0.02,
                                 segment_size=1 << 20, max_size=1 << 30)

        async def writer():  # commits lagging 50 batches behind, so segments get deleted
            async for entry in spool.read():
                if entry.seq > 50:
                    await spool.commit(entry.seq - 50)

        async def acknowledge(seq, i):  # as the pipeline does: ack once durable
            await spool.durable(seq)
            sys.stdout.write(f"{seq} {i}\\n")
            sys.stdout.flush()

        tasks = {asyncio.create_task(writer())}
        i = first
        while True:
            seq = await spool.append(payload(i), {"i": i})
            task = asyncio.create_task(acknowledge(seq, i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    """
)


def payload(i: int) -> bytes:
    return (b"%08d" % i) * ((i * 7919) % 37000 + 1)


_ACK = re.compile(rb"^(\d+) (\d+)$")


def parse_ack(line: bytes) -> tuple[int, int] | None:
    """(seq, i) from a line the child printed after an append returned; None for log lines."""
    match = _ACK.match(line.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def run_child_until_killed(
    directory: str, first: int, lines_before_kill: int, fsync: str
) -> list[tuple[int, int]]:
    """Start the appender, SIGKILL it after ``lines_before_kill`` acknowledged appends."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, directory, str(first), fsync],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    acknowledged = []
    deadline = time.monotonic() + 60
    try:
        assert child.stdout is not None
        while len(acknowledged) < lines_before_kill and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            if ack := parse_ack(line):
                acknowledged.append(ack)
    finally:
        child.kill()
        rest, _ = child.communicate()
    # Lines already in the pipe were printed after their append returned: they count too.
    acknowledged.extend(ack for line in rest.splitlines() if (ack := parse_ack(line)))
    assert len(acknowledged) >= min(lines_before_kill, 1), "the child appended nothing"
    return acknowledged


async def verify(directory: str, acknowledged: dict[int, int]) -> int:
    """Every acknowledged, uncommitted batch is present and intact; nothing else is garbage."""
    spool = await Spool.open(directory, fsync="batch", segment_size=1 << 20)
    committed = spool.stats().committed_seq
    found = {}
    async for entry in spool.read(follow=False):
        i = entry.meta["i"]
        assert entry.payload == payload(i), f"seq {entry.seq} is corrupt"
        found[entry.seq] = i
    assert list(found) == sorted(found)
    missing = [s for s in acknowledged if s > committed and found.get(s) != acknowledged[s]]
    assert not missing, f"acknowledged batches lost: {missing[:10]}"
    await spool.close()
    return len(found)


@pytest.mark.parametrize("fsync", ["batch", "interval"])
def test_kill_9_during_appends_loses_no_acknowledged_batch(tmp_path, fsync):
    directory = str(tmp_path / "spool")
    rng = random.Random(6)
    acknowledged: dict[int, int] = {}
    first = 0
    for _ in range(4):
        pairs = run_child_until_killed(directory, first, rng.randint(20, 200), fsync)
        acknowledged.update(pairs)
        first = max(i for _, i in pairs) + 1
        present = asyncio.run(verify(directory, acknowledged))
        assert present > 0
