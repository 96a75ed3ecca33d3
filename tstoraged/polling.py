"""``PollingSource``: a source that polls; the core owns schedule, failures and timeouts.

Most custom sources poll: an HTTP API, a serial device, a file that is rewritten. The author
writes one method::

    class WeatherSource(PollingSource):
        config: WeatherConfig          # a PollingConfig subclass: interval, offset, poll_timeout

        async def poll(self, tick: Tick) -> None:
            reading = await fetch(self.config.url)
            record = self.context.map(reading, origin=self.config.url, received_ns=tick.at_ns)
            if record is not None:
                await self.context.emit([record])

and the core does the rest:

- **schedule**: polls start on the wall-clock multiples of ``interval`` plus ``offset``
  (:class:`tstoraged.scheduling.IntervalSchedule`): 10 s polls at :00, :10, :20, never drifting;
- **slow polls**: a poll that runs past the next tick makes that tick *skipped and counted*
  (``tstoraged_polls_skipped_total``, ``poll_skipped`` in the log), never queued;
- **failed polls**: an exception from ``poll()`` is logged (``poll_failed``; the first of a run
  of failures always, repeats rate-limited), counted (``tstoraged_poll_failures_total``),
  reported as the source's problem (the daemon is not ready meanwhile), and the poll is tried
  again at the next tick -- the same instance, its state kept, no restart and no growing
  backoff. The first poll that works again logs ``poll_recovered`` and clears the problem;
- **timeouts**: with ``poll_timeout`` set, a poll still running after it is cancelled and
  counted as a failed poll.

``setup()`` and ``teardown()`` are optional: open and close what the polls share (a serial
port, an HTTP session). An exception from ``setup()`` fails the source like any ``run()``
failure: the core restarts it after its restart backoff.

Cancellation (shutdown, reload, ``poll_timeout``) reaches ``poll()`` at its current ``await``.
A blocking call running in a thread (``asyncio.to_thread``) cannot be cancelled: the thread
runs on, and the process cannot exit before it returns. Bound every blocking call with a
timeout of its own (``urlopen(url, timeout=5)``, ``serial.Serial(timeout=1)``).
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from typing import Annotated

from pydantic import Field

from tstoraged.config.units import Duration
from tstoraged.scheduling import IntervalSchedule, Tick
from tstoraged.source import Source, SourceConfig, SourceContext

__all__ = ["PollingConfig", "PollingSource"]


class PollingConfig(SourceConfig):
    """Settings of every polling source; subclass it and add your own keys."""

    interval: Duration = Field(
        default=10.0,
        gt=0,
        description="Time between polls; polls start on multiples of it (10s: :00, :10, ...).",
    )
    offset: Duration = Field(
        default=0.0, ge=0, description="Shift of the poll instants (interval 1m, offset 5s: :05)."
    )
    poll_timeout: Annotated[Duration, Field(gt=0)] | None = Field(
        default=None,
        description="Cancel a poll still running after this long (a failed poll); default: none.",
    )


class PollingSource(Source):
    """Base class of sources that poll: implement :meth:`poll`; the core owns the schedule.

    :attr:`schedule` is created from the config and may be replaced before ``run()`` (tests
    give it a fake clock). The counters ``polls``, ``poll_failures`` and ``polls_skipped``
    (``tstoraged_<name>_total{source=...}``) are the source's own metrics.
    """

    config: PollingConfig

    def __init__(self, config: PollingConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.schedule = IntervalSchedule(config.interval, offset=config.offset)
        self.consecutive_failures = 0
        """Polls failed in a row (0 after a poll that worked)."""
        metrics = context.metrics
        self._polls = metrics.counter("polls", "Polls that completed.").labels()
        self._failures = metrics.counter(
            "poll_failures", "Polls that raised or timed out (retried at the next tick)."
        ).labels()
        self._skipped = metrics.counter(
            "polls_skipped", "Poll ticks skipped because the previous poll ran past them."
        ).labels()
        self._failing_since: float | None = None

    async def setup(self) -> None:
        """Called once before the first poll: open what polls share. Raising fails the source."""

    async def teardown(self) -> None:
        """Called once after the last poll, also on cancellation; close what setup opened."""

    @abstractmethod
    async def poll(self, tick: Tick) -> None:
        """Take one reading and emit its records.

        ``tick.at_ns`` is the scheduled instant (Unix ns): passing it as ``received_ns`` to
        ``context.map`` gives every record of one poll the aligned capture time. Raise when
        the poll failed (endpoint down, timeout): the core logs, counts and retries at the
        next tick. Reject bad input with ``context.reject`` instead of raising.
        """

    async def run(self) -> None:
        """Set up, then poll at every tick until cancelled; tear down in any case."""
        await self.setup()
        try:
            async for tick in self.schedule:
                if tick.skipped:
                    self._skipped.inc(tick.skipped)
                    self.context.log.warning(
                        "poll_skipped",
                        skipped=tick.skipped,
                        reason="the previous poll ran past its tick",
                        interval=self.config.interval,
                    )
                await self._poll_once(tick)
        finally:
            await self.teardown()

    async def _poll_once(self, tick: Tick) -> None:
        started = time.monotonic()
        timeout = self.config.poll_timeout
        try:
            async with asyncio.timeout(timeout) as scope:
                await self.poll(tick)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if scope.expired():
                self._failed(f"poll did not finish within poll_timeout ({timeout:g}s)", None)
            else:
                self._failed(f"{type(exc).__name__}: {exc}", exc)
        except Exception as exc:
            self._failed(f"{type(exc).__name__}: {exc}", exc)
        else:
            self._polls.inc()
            if self._failing_since is not None:
                self.context.log.info(
                    "poll_recovered",
                    failures=self.consecutive_failures,
                    down_s=round(started - self._failing_since, 3),
                )
                self.context.set_problem(None)
            self.consecutive_failures = 0
            self._failing_since = None

    def _failed(self, error: str, exc: BaseException | None) -> None:
        self._failures.inc()
        self.consecutive_failures += 1
        edge = self._failing_since is None
        if edge:
            self._failing_since = time.monotonic()
        self.context.set_problem(f"poll failed: {error}")
        self.context.log.warning(
            "poll_failed",
            error=error,
            failures=self.consecutive_failures,
            retry="at the next tick",
            exc_info=exc if edge else None,
            # The first failure of a run is always logged; repeats are rate-limited.
            **({"rate_limit": False} if edge else {}),
        )
