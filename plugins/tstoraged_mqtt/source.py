"""The ``mqtt`` source: subscribe, decode, map, emit; acknowledge once the records are durable.

Flow per message: paho's ``on_message`` (on the event loop) appends it to the inbox; the
consumer task takes everything the inbox holds, decodes and maps it, and emits the records
of the whole run with one ack. That ack, called by the core once the records are durable,
sends the PUBACKs (QoS 1) or PUBCOMPs (QoS 2) of those messages in the order they arrived,
rejected messages included (they are dead-lettered, and can never succeed).

Bounded by ``max_in_flight``: QoS 1/2 messages received and not yet acknowledged (on MQTT 5
also sent as Receive Maximum); by ``INBOX_LIMIT``: messages received but not yet handed to
the pipeline (the pipeline's own queue bounds the rest). At either bound the source stops
reading, which becomes TCP backpressure on the broker. QoS 0 messages wait for nothing once
handed over.

A lost connection discards the QoS 1/2 messages not yet emitted (the broker sends them again:
the session is persistent) and makes the acks of the old connection no-ops (packet ids
belong to a connection's flow; the broker re-sends what it did not get an ack for).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tstoraged.decoding import MessageDecoder
from tstoraged.source import Source
from tstoraged_mqtt.config import MqttConfig, Subscription
from tstoraged_mqtt.connection import BrokerConnection, ConnectFailed
from tstoraged_mqtt.journal import CHECKPOINT, AckJournal, digest
from tstoraged_mqtt.topics import TopicTemplate

if TYPE_CHECKING:
    from tstorage_client.record import Record
    from tstoraged.source import SourceConfig, SourceContext

__all__ = ["MqttSource", "SubscriptionState"]

STATE_FILE = "subscriptions.json"
INBOX_LIMIT = 2000
"""Messages received but not yet handed to the pipeline, at most (reading pauses there): the
consumer's runs stay small, so memory does not peak with the size of a burst."""


class SubscriptionState:
    """The filters this source subscribed to, remembered in its state dir across restarts.

    A persistent session keeps subscriptions on the broker; a filter removed from the config
    must be unsubscribed explicitly, even after a restart. The file records the filters
    possibly subscribed under a client id (written *before* subscribing new ones).
    """

    def __init__(self, directory: Path, client_id: str | None) -> None:
        self.path = directory / STATE_FILE
        self.client_id = client_id

    def load(self) -> set[str]:
        """Filters possibly subscribed in this client id's session."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        if not isinstance(data, dict) or data.get("client_id") != self.client_id:
            return set()  # another session's filters: that session is not ours to clean
        filters = data.get("filters")
        return {f for f in filters if isinstance(f, str)} if isinstance(filters, list) else set()

    def save(self, filters: set[str]) -> None:
        """Record ``filters`` atomically."""
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump({"client_id": self.client_id, "filters": sorted(filters)}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)


@dataclass
class _Route:
    """A configured subscription at run time."""

    subscription: Subscription
    template: TopicTemplate
    decoder: MessageDecoder
    last_message: float = 0.0
    """Monotonic time of the last message (or of the subscription)."""
    silent: bool = False


@dataclass
class _Counters:
    received: int = 0
    mapped: int = 0
    rejected: int = 0
    acknowledged: int = 0
    repeats_skipped: int = 0
    connects: int = 0
    last_message_unix: float | None = None
    state: str = "starting"
    problems: dict[str, str] = field(default_factory=dict)


def backoff_delays(initial: float, maximum: float, jitter: float) -> Callable[[int], float]:
    """Attempt number (0-based) -> wait: doubling from ``initial`` up to ``maximum``, jittered."""

    def delay(attempt: int) -> float:
        base: float = min(maximum, initial * 2 ** min(attempt, 30))
        return base * (1 - jitter) + base * jitter * random.random()

    return delay


class MqttSource(Source):
    """Subscribes to an MQTT broker and emits the records its messages map to."""

    config_model = MqttConfig

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        if not isinstance(config, MqttConfig):
            raise TypeError(f"MqttSource needs an MqttConfig, got {type(config).__name__}")
        super().__init__(config, context)
        self.mqtt = config
        self.routes = [
            _Route(sub, sub.template, config.build_decoder(sub)) for sub in config.subscriptions
        ]
        self._route_cache: dict[str, tuple[_Route, dict[str, str]] | None] = {}
        self._inbox: list[tuple[str, bytes, int, int, int, int, bool]] = []
        self._durable_unacked: dict[int, int] = {}
        """Packet id -> digest of QoS 1 messages stored but maybe not acknowledged: a copy the
        broker sends again (DUP) is acknowledged without being stored twice."""
        self._journal = (
            AckJournal(context.state_dir, config.client_id, 2 * config.max_in_flight)
            if config.cap.field is not None and config.skip_repeats
            else None
        )
        self._wake = asyncio.Event()
        self._generation = 0
        self._in_flight = 0
        """Messages received and not yet durable (all QoS; for status)."""
        self._unacked = 0
        """QoS 1/2 messages received and not yet acknowledged (or dropped)."""
        self._emitted = 0
        """Messages handed to the pipeline whose ack has not come yet."""
        self._acked_event = asyncio.Event()
        self._counters = _Counters()
        self.connection: BrokerConnection | None = None
        metrics = context.metrics
        counters = {
            "received": ("mqtt_messages_received", "MQTT messages received"),
            "mapped": ("mqtt_records_mapped", "Records mapped from MQTT messages"),
            "rejected": ("mqtt_messages_rejected", "Messages or readings that did not map"),
            "acked": ("mqtt_messages_acknowledged", "Messages acknowledged once durable"),
            "connects": ("mqtt_connections", "Successful connections to the broker"),
        }
        gauges = {
            "in_flight": ("mqtt_messages_in_flight", "Messages received, not yet durable"),
            "connected": ("mqtt_connected", "1 while connected to the broker"),
            "last": ("mqtt_last_message_timestamp_seconds", "Unix time of the last message"),
        }
        count = {key: metrics.counter(*spec).labels() for key, spec in counters.items()}
        gauge = {key: metrics.gauge(*spec).labels() for key, spec in gauges.items()}
        self._m_received, self._m_mapped = count["received"], count["mapped"]
        self._m_rejected, self._m_acked = count["rejected"], count["acked"]
        self._m_connects = count["connects"]
        self._m_in_flight, self._m_connected = gauge["in_flight"], gauge["connected"]
        self._m_last = gauge["last"]

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and consume until cancelled, reconnecting with backoff."""
        config = self.mqtt
        connection = BrokerConnection(config, self._on_message)
        self.connection = connection
        delay = backoff_delays(
            config.reconnect.initial, config.reconnect.max, config.reconnect.jitter
        )
        state = SubscriptionState(self.context.state_dir, config.client_id)
        if self._journal is not None:
            durable_seq = self.context.durable_checkpoints().get(CHECKPOINT, 0)
            recovered = self._journal.load(durable_seq if isinstance(durable_seq, int) else 0)
            self._durable_unacked.update(recovered)
        consumer = asyncio.create_task(self._consume(), name=f"{self.context.name}-consume")
        reporter = asyncio.create_task(self._report(), name=f"{self.context.name}-report")
        attempt = 0
        try:
            while True:
                self._set_state("connecting")
                try:
                    present = await connection.connect()
                    await self._subscribe(connection, state, present)
                except (ConnectFailed, ConnectionError) as exc:
                    connection.abort()
                    self._connection_problem(f"{exc}")
                    await asyncio.sleep(delay(attempt))
                    attempt += 1
                    continue
                attempt = 0
                await self._connected(connection, present)
                lost = connection.lost
                assert lost is not None
                watch = asyncio.create_task(self._watch_liveness(connection))
                try:
                    waited: list[asyncio.Future[Any]] = [lost, consumer]
                    await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    watch.cancel()
                if consumer.done():
                    consumer.result()  # its failure is the source's: the core restarts it
                    raise RuntimeError("the consumer of received messages stopped")
                self._disconnected(lost.result())
                await asyncio.sleep(delay(0))
        finally:
            reporter.cancel()
            consumer.cancel()
            connection.pause_reading()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await self._wait_for_acks()
            self._generation += 1  # acks that come later have no connection to go to
            await connection.close()
            self._m_connected.set(0)
            counters = self._counters
            self.context.log.info(
                "mqtt_source_stopped",
                received=counters.received,
                mapped=counters.mapped,
                rejected=counters.rejected,
                acknowledged=counters.acknowledged,
                repeats_skipped=counters.repeats_skipped,
            )
            if self._journal is not None:
                self._journal.close()

    async def _wait_for_acks(self) -> None:
        """On stop: let the records already handed over become durable and be acknowledged.

        Otherwise every restart or reload would have the broker send them again (duplicates).
        """
        deadline = time.monotonic() + self.mqtt.stop_ack_timeout
        while self._emitted > 0 and (remaining := deadline - time.monotonic()) > 0:
            self._acked_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked_event.wait(), remaining)
        if self._emitted > 0:
            self.context.log.warning("mqtt_stopped_with_unacknowledged", messages=self._emitted)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._publish_details()

    async def _subscribe(
        self, connection: BrokerConnection, state: SubscriptionState, present: bool
    ) -> None:
        wanted = {route.template.subscription: route.subscription.qos for route in self.routes}
        remembered = state.load()
        stale = sorted(remembered - set(wanted))
        state.save(remembered | set(wanted))
        refused = await connection.subscribe(sorted(wanted.items()))
        problems = [
            f"broker refused subscription {topic}: {reason}"
            for (topic, _qos), reason in zip(sorted(wanted.items()), refused, strict=False)
            if reason is not None
        ]
        if stale:
            results = await connection.unsubscribe(stale)
            self.context.log.info(
                "mqtt_unsubscribed",
                filters=stale,
                session_present=present,
                refused=[r for r in results if r is not None] or None,
            )
        state.save(set(wanted))
        if problems:
            for problem in problems:
                self.context.log.error("mqtt_subscription_refused", reason=problem)
            self._counters.problems["subscribe"] = "; ".join(problems)
        else:
            self._counters.problems.pop("subscribe", None)
        now = time.monotonic()
        for route in self.routes:
            route.last_message = now

    async def _connected(self, connection: BrokerConnection, present: bool) -> None:
        self._counters.connects += 1
        self._m_connects.inc()
        self._m_connected.set(1)
        self._counters.problems.pop("connection", None)
        self.context.log.info(
            "mqtt_connected",
            broker=f"{self.mqtt.host}:{self.mqtt.broker_port}",
            session_present=present,
            subscriptions=[route.template.subscription for route in self.routes],
        )
        self._set_state("connected")

    def _connection_problem(self, reason: str) -> None:
        problem = f"cannot connect to broker {self.mqtt.host}:{self.mqtt.broker_port}: {reason}"
        if self._counters.problems.get("connection") != problem:
            self.context.log.error("mqtt_connect_failed", reason=reason)
        self._counters.problems["connection"] = problem
        self._m_connected.set(0)
        self._set_state("disconnected")

    def _disconnected(self, reason: str) -> None:
        self._m_connected.set(0)
        self._generation += 1
        # QoS 1/2 messages not yet emitted come again (persistent session); QoS 0 ones do not.
        kept = [entry for entry in self._inbox if entry[2] == 0]
        lost = [entry for entry in self._inbox if entry[2] != 0]
        self._inbox[:] = kept
        self._in_flight -= len(lost)
        self._unacked -= len(lost)
        dropped = len(lost)
        self._m_in_flight.set(self._in_flight)
        self.context.log.warning("mqtt_connection_lost", reason=reason, discarded=dropped)
        self._counters.problems["connection"] = f"connection to the broker lost: {reason}"
        self._set_state("reconnecting")

    # -- messages -------------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, qos: int, mid: int, dup: bool) -> None:
        self._inbox.append((topic, payload, qos, mid, time.time_ns(), self._generation, dup))
        self._in_flight += 1
        if qos:
            self._unacked += 1
        if (
            self._unacked >= self.mqtt.max_in_flight or len(self._inbox) >= INBOX_LIMIT
        ) and self.connection is not None:
            # On MQTT 5 the broker should stop at Receive Maximum by itself, but not every
            # broker does (Mosquitto 2.0 forgets it after a session resume), and QoS 0 and
            # 3.1.1 have no such limit: not reading leaves the rest in TCP buffers and on
            # the broker.
            self.connection.pause_reading()
        if len(self._inbox) == 1:
            self._wake.set()

    def _route(self, topic: str) -> tuple[_Route, dict[str, str]] | None:
        cache = self._route_cache
        try:
            return cache[topic]
        except KeyError:
            pass
        found = None
        for route in self.routes:
            fields = route.template.match(topic)
            if fields is not None:
                found = (route, fields)
                break
        if len(cache) >= 4096:
            cache.clear()
        cache[topic] = found
        return found

    async def _consume(self) -> None:
        context = self.context
        map_record = context.map
        reject = context.reject
        counters = self._counters
        while True:
            if not self._inbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._inbox
            self._inbox = []
            self._maybe_resume()
            generation = self._generation
            records: list[Record[bytes]] = []
            acks: list[tuple[int, int]] = []
            durable: list[tuple[int, int]] = []
            rejected = 0
            known = self._durable_unacked
            now = time.monotonic()
            for topic, payload, qos, mid, received_ns, _generation, dup in batch:
                if qos:
                    acks.append((mid, qos))
                if qos == 1:
                    fingerprint = digest(topic, payload)
                    if known:
                        if dup and known.get(mid) == fingerprint:
                            del known[mid]
                            counters.repeats_skipped += 1
                            continue  # stored before a crash or disconnect: only ack it
                        if not dup:
                            known.clear()  # the broker's repeats come first; they are over
                    durable.append((mid, fingerprint))
                route = self._route(topic)
                if route is None:
                    rejected += 1
                    reject(payload, f"topic {topic!r} matches no subscription", origin=topic)
                    continue
                target, topic_fields = route
                target.last_message = now
                try:
                    readings = target.decoder(payload)
                except Exception as exc:  # a decoder plugin's bug must not stop the source
                    rejected += 1
                    reject(payload, _reason(exc), origin=topic)
                    continue
                for reading in readings:
                    fields = {**topic_fields, **reading}
                    record = map_record(fields, origin=topic, raw=payload, received_ns=received_ns)
                    if record is None:
                        rejected += 1
                    else:
                        records.append(record)
            count = len(batch)
            counters.received += count
            counters.mapped += len(records)
            counters.rejected += rejected
            counters.last_message_unix = batch[-1][4] / 1e9
            self._m_received.inc(count)
            self._m_mapped.inc(len(records))
            if rejected:
                self._m_rejected.inc(rejected)
            self._m_last.set(counters.last_message_unix)
            self._m_in_flight.set(self._in_flight)
            journal = self._journal
            seq = 0
            if journal is not None:
                seq = journal.next_seq
                journal.next_seq += 1
                journal.emitted(seq, durable)
            ack = self._acknowledger(generation, acks, durable, count, seq)
            self._emitted += count
            if journal is not None:
                await context.emit(records, ack, checkpoint={CHECKPOINT: seq})
            else:
                await context.emit(records, ack)

    def _acknowledger(
        self,
        generation: int,
        acks: list[tuple[int, int]],
        durable: list[tuple[int, int]],
        count: int,
        seq: int,
    ) -> Callable[[], None]:
        def acknowledge() -> None:
            connection = self.connection
            if generation != self._generation:
                # The connection these packet ids belong to is gone, and nothing acknowledged
                # them: the broker sends them again, and those copies need only an ack.
                self._durable_unacked.update(durable)
            elif connection is not None:
                if self._journal is not None:
                    self._journal.acknowledged(seq)
                connection.ack(acks)
                self._counters.acknowledged += len(acks)
                self._m_acked.inc(len(acks))
            self._in_flight -= count
            self._unacked -= len(acks)
            self._emitted -= count
            self._acked_event.set()
            self._m_in_flight.set(self._in_flight)
            self._maybe_resume()

        return acknowledge

    def _maybe_resume(self) -> None:
        connection = self.connection
        if (
            connection is not None
            and connection.paused
            and self._unacked < self.mqtt.max_in_flight
            and len(self._inbox) < INBOX_LIMIT
        ):
            connection.resume_reading()

    # -- liveness and reporting ----------------------------------------------------------------

    async def _watch_liveness(self, connection: BrokerConnection) -> None:
        expected = [r for r in self.routes if r.subscription.expect_every is not None]
        period = min((r.subscription.expect_every or 0 for r in expected), default=5.0)
        while True:
            await asyncio.sleep(max(0.05, min(period / 4, 5.0)))
            now = time.monotonic()
            silent = []
            for route in expected:
                limit = route.subscription.expect_every
                assert limit is not None
                quiet = now - route.last_message
                route.silent = quiet > limit
                if route.silent:
                    silent.append(f"{route.subscription.topic} (silent for {quiet:.0f} s)")
            if silent:
                problem = "no messages on " + ", ".join(silent)
                self.context.log.warning("mqtt_silence_detected", problem=problem)
                self._counters.problems["silence"] = problem
                self._publish_details()
                # Connected but silent: re-establish the connection (and the session).
                connection.abort()
                return
            if self._counters.problems.pop("silence", None) is not None:
                self._publish_details()

    def _set_state(self, state: str) -> None:
        self._counters.state = state
        self._publish_details()

    def _publish_details(self) -> None:
        counters = self._counters
        problems = counters.problems
        self.context.set_problem("; ".join(problems.values()) if problems else None)
        self.context.set_details(self.details())

    def details(self) -> dict[str, Any]:
        """What ``tstoraged status`` shows of this source."""
        counters = self._counters
        return {
            "connection": counters.state,
            "broker": f"{self.mqtt.host}:{self.mqtt.broker_port}",
            "received": counters.received,
            "mapped": counters.mapped,
            "rejected": counters.rejected,
            "in_flight": self._in_flight,
            "acknowledged": counters.acknowledged,
            "repeats_skipped": counters.repeats_skipped,
            "connects": counters.connects,
            "last_message": counters.last_message_unix,
            "subscriptions": {
                route.template.subscription: {
                    "qos": route.subscription.qos,
                    **({"silent": True} if route.silent else {}),
                }
                for route in self.routes
            },
        }


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValueError):
        return str(exc) or type(exc).__name__
    return f"decoder failed: {type(exc).__name__}: {exc}"
