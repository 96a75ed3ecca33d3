"""The writer's outcome classification: retry, give up, invalid records, poison isolation."""

from __future__ import annotations

import random

import pytest
from tenacity import RetryCallState

from tstorage_client.protocol.wire import MAX_PAYLOAD
from tstorage_client.record import Key, Record
from tstorage_client.response import ResponseStatus
from tstoraged.pipeline.batch import Batch
from tstoraged.pipeline.deadletter import DeadLetterFile, iter_dead_letters
from tstoraged.pipeline.settings import RetrySettings, TargetSettings, WriteMode
from tstoraged.pipeline.stage import MemoryHandoff
from tstoraged.pipeline.testing import RecordingObserver, ScriptedSink
from tstoraged.pipeline.validation import invalid_records
from tstoraged.pipeline.wireform import decode_request, encode_request
from tstoraged.pipeline.writer import Backoff, Writer

OK, ERROR, DISCONNECTED = ResponseStatus.OK, ResponseStatus.ERROR, ResponseStatus.DISCONNECTED
FAST_RETRY = RetrySettings(initial_backoff=0.01, max_backoff=0.08, jitter=0.0)


def records(count: int, *, start: int = 0):
    return [Record(Key(1, i, 0, i), i.to_bytes(4, "little")) for i in range(start, start + count)]


def make_batch(recs, *, sources=None, acks=(), write_mode: WriteMode = "put", seq=0) -> Batch:
    segments = sources or [("src", len(recs))]
    return Batch(seq, write_mode, list(recs), segments, list(acks), 0, 0.0, 0.0)


class Harness:
    """A writer over a scripted sink, with recorded sleeps, observer and dead letters."""

    def __init__(self, tmp_path, sink: ScriptedSink, retry: RetrySettings = FAST_RETRY):
        self.sink = sink
        self.sleeps: list[float] = []
        self.observer = RecordingObserver()
        self.dead_path = tmp_path / "dead-letter.jsonl"
        self.writer = Writer(
            MemoryHandoff(),
            TargetSettings(host="127.0.0.1", port=1),
            retry,
            DeadLetterFile(self.dead_path),
            observer=self.observer,
            sink_factory=sink.factory,
            sleep=self.record_sleep,
        )

    async def record_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def dead_letters(self):
        return list(iter_dead_letters(self.dead_path))


async def test_transient_failures_are_retried_with_growing_backoff_then_delivered(tmp_path):
    sink = ScriptedSink([DISCONNECTED, ConnectionRefusedError(), TimeoutError(), OK])
    h = Harness(tmp_path, sink)
    fired = []
    await h.writer.deliver(make_batch(records(5), acks=[lambda: fired.append(1)]))
    assert sink.written == records(5)
    assert len(sink.attempts) == 4
    assert h.sleeps == [0.01, 0.02, 0.04]
    assert len(h.observer.retries) == 3
    assert sink.resets == 3  # every transient failure drops the connection
    assert h.observer.written["src"] == 5
    assert fired == [1]
    assert h.dead_letters() == []
    # Reported: down after the failures, up after the successful write.
    assert h.observer.connection[-1] == ("127.0.0.1:1", True)


def test_backoff_is_exponential_capped_and_jittered_within_bounds():
    settings = RetrySettings(initial_backoff=1.0, max_backoff=10.0, jitter=0.5)
    backoff = Backoff(settings, random.Random(7))

    def wait(attempt: int) -> float:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        return backoff(state)

    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (60, 10.0)]:
        for _ in range(50):
            assert base * 0.5 <= wait(attempt) <= min(10.0, base * 1.5)
    unjittered = Backoff(RetrySettings(initial_backoff=1.0, max_backoff=10.0, jitter=0.0))
    state = RetryCallState(None, None, (), {})
    state.attempt_number = 4
    assert unjittered(state) == 8.0


async def test_gives_up_after_n_attempts_and_dead_letters_with_the_reason(tmp_path):
    sink = ScriptedSink([DISCONNECTED] * 10)
    retry = RetrySettings(initial_backoff=0.01, max_backoff=0.01, give_up_after_attempts=3)
    h = Harness(tmp_path, sink, retry)
    fired = []
    await h.writer.deliver(make_batch(records(4), acks=[lambda: fired.append(1)]))
    assert len(sink.attempts) == 3
    assert sink.written == []
    dead = h.dead_letters()
    assert [d.record() for d in dead] == records(4)
    assert dead[0].reason == (
        "gave up after 3 attempts: disconnected: the connection was closed before TStorage answered"
    )
    assert h.observer.dead_lettered["src"] == 4
    assert fired == [1]  # dead-lettered is durable: the source may commit


async def test_gives_up_after_a_duration(tmp_path):
    sink = ScriptedSink([OSError("unreachable")] * 10)
    h = Harness(tmp_path, sink, RetrySettings(give_up_after_seconds=0.0))
    await h.writer.deliver(make_batch(records(2)))
    assert len(sink.attempts) == 1
    assert h.dead_letters()[0].reason == (
        "gave up after 1 attempts: connection_error: OSError: unreachable"
    )


async def test_invalid_records_are_dead_lettered_never_sent_and_the_rest_delivered(tmp_path):
    good = records(4)
    bad = [
        Record(Key(-1, 1, 1, 1), b"negative cid"),
        Record(Key(1, 2**63 - 1, 1, 1), b"mid at max: TStorage would drop it silently"),
        Record(Key(1, 1, 2**31, 1), b"moid out of range"),
        Record(Key(1, 1, 1, 1), b"\x00" * (MAX_PAYLOAD + 1)),
    ]
    mixed = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3]]
    sources = [("a", 4), ("b", 4)]
    sink = ScriptedSink()
    h = Harness(tmp_path, sink)
    await h.writer.deliver(make_batch(mixed, sources=sources))
    assert sink.written == good
    assert all(r not in attempt for attempt in sink.attempts for r in bad)
    dead = h.dead_letters()
    assert [d.key["mid"] for d in dead] == [r.key.mid for r in bad]
    assert [d.source for d in dead] == ["a", "a", "b", "b"]
    assert dead[0].reason == "invalid record: key.cid -1 is below 0"
    assert dead[1].reason.endswith("TStorage would drop it silently")
    assert dead[2].reason == "invalid record: key.moid 2147483648 is above the maximum 2147483647"
    assert "payload of" in dead[3].reason
    assert h.observer.written == {"a": 2, "b": 2}
    assert h.observer.dead_lettered == {"a": 2, "b": 2}


def test_acq_at_max_is_invalid_only_for_puta():
    record = [Record(Key(1, 1, 1, 1, 2**63 - 1), b"")]
    assert invalid_records(record, "put") == []
    assert invalid_records(record, "puta")[0][0] == 0


async def test_refused_records_are_isolated_by_splitting_and_the_rest_delivered(tmp_path):
    recs = records(20)
    poison = {recs[3], recs[16]}
    sink = ScriptedSink(refuse=poison.__contains__)
    h = Harness(tmp_path, sink)
    fired = []
    await h.writer.deliver(make_batch(recs, acks=[lambda: fired.append(1)]))
    assert sink.written == [r for r in recs if r not in poison]  # in order
    dead = h.dead_letters()
    assert {d.record() for d in dead} == poison
    assert {d.reason for d in dead} == {"refused by TStorage: ERROR"}
    assert fired == [1]
    assert h.sleeps == []  # refusals are not transient: no backoff


async def test_poison_isolation_is_bounded_by_max_refusals(tmp_path):
    sink = ScriptedSink(refuse=lambda record: True)
    h = Harness(tmp_path, sink, RetrySettings(max_refusals=5))
    await h.writer.deliver(make_batch(records(64)))
    assert len(sink.attempts) == 5
    dead = h.dead_letters()
    assert len(dead) == 64
    assert "isolation stopped after 5 refusals" in dead[-1].reason


async def test_a_single_error_answer_is_retried_once_before_dead_lettering(tmp_path):
    # A lone ERROR (e.g. the connection broke mid-answer) does not condemn the record.
    sink = ScriptedSink([ERROR])
    h = Harness(tmp_path, sink)
    await h.writer.deliver(make_batch(records(1)))
    assert sink.written == records(1)
    assert h.dead_letters() == []


async def test_new_target_applies_to_the_next_attempt_while_retrying(tmp_path):
    first = ScriptedSink([DISCONNECTED] * 100)
    h = Harness(tmp_path, first)
    second = ScriptedSink()

    async def sleep_then_switch(seconds: float) -> None:
        h.sleeps.append(seconds)
        if len(h.sleeps) == 2:
            h.writer._sink_factory = second.factory
            h.writer.reconfigure(target=TargetSettings(host="127.0.0.1", port=2))

    h.writer._sleep = sleep_then_switch
    await h.writer.deliver(make_batch(records(3)))
    assert len(first.attempts) == 2
    assert first.closed
    assert second.written == records(3)
    assert second.target == "127.0.0.1:2"


async def test_write_mode_cannot_change_while_running(tmp_path):
    h = Harness(tmp_path, ScriptedSink())
    with pytest.raises(ValueError, match="write_mode"):
        h.writer.reconfigure(target=TargetSettings(port=1, write_mode="puta"))


async def test_a_failing_ack_does_not_stop_delivery(tmp_path):
    sink = ScriptedSink()
    h = Harness(tmp_path, sink)
    fired = []

    def broken_ack() -> None:
        raise RuntimeError("source bug")

    await h.writer.deliver(make_batch(records(2), acks=[broken_ack, lambda: fired.append(2)]))
    assert fired == [2]
    assert sink.written == records(2)


async def test_changed_timeout_or_tls_on_the_same_address_reconnects(tmp_path):
    made: list[TargetSettings] = []
    sink = ScriptedSink()

    def factory(settings: TargetSettings) -> ScriptedSink:
        made.append(settings)
        return sink.factory(settings)

    h = Harness(tmp_path, sink)
    h.writer._sink_factory = factory
    await h.writer.deliver(make_batch(records(1)))
    h.writer.reconfigure(target=TargetSettings(host="127.0.0.1", port=1))  # unchanged
    await h.writer.deliver(make_batch(records(1, start=1)))
    h.writer.reconfigure(target=TargetSettings(host="127.0.0.1", port=1, timeout=99.0))
    await h.writer.deliver(make_batch(records(1, start=2)))
    assert [settings.timeout for settings in made] == [10.0, 99.0]
    assert sink.written == records(3)


class EncoderFailingSink(ScriptedSink):
    """Raises like a client whose encoder meets a record it cannot handle."""

    async def write(self, records, write_mode):
        if any(record.value == b"unencodable" for record in records):
            raise ValueError("cannot encode")
        return await super().write(records, write_mode)


async def test_an_unexpected_client_error_is_isolated_like_a_refusal(tmp_path):
    recs = records(8)
    odd = Record(Key(1, 99, 0, 99), b"unencodable")
    sink = EncoderFailingSink()
    h = Harness(tmp_path, sink)
    await h.writer.deliver(make_batch([*recs[:3], odd, *recs[3:]]))
    assert sink.written == recs
    dead = h.dead_letters()
    assert [d.record() for d in dead] == [odd]
    assert dead[0].reason == "write failed: ValueError: cannot encode"


async def test_rejects_written_before_a_batch_are_synced_before_its_acks_fire(tmp_path):
    h = Harness(tmp_path, ScriptedSink())
    dead = h.writer._dead_letters
    dead.write_raw("src", "bad line", "unparseable", origin="f:1")
    synced_before_ack = []
    batch = make_batch([], acks=[lambda: synced_before_ack.append(not dead._dirty)])
    await h.writer.deliver(batch)
    assert synced_before_ack == [True]


def encoded_batch(recs, *, acks=()) -> Batch:
    return Batch(
        0,
        "put",
        [],
        [("src", len(recs))],
        list(acks),
        0,
        0.0,
        0.0,
        encoded=encode_request(recs, "put"),
        encoded_count=len(recs),
        decoder=decode_request,
    )


async def test_a_batch_kept_as_a_request_is_sent_as_it_is(tmp_path):
    recs = records(30)
    sink = ScriptedSink()
    h = Harness(tmp_path, sink)
    fired = []
    await h.writer.deliver(encoded_batch(recs, acks=[lambda: fired.append(1)]))
    assert sink.written == recs
    assert len(sink.attempts) == 1
    assert h.dead_letters() == []
    assert fired == [1]


async def test_a_refused_request_is_decoded_and_its_poison_isolated(tmp_path):
    recs = records(20)
    poison = {recs[5]}
    sink = ScriptedSink(refuse=poison.__contains__)
    h = Harness(tmp_path, sink)
    fired = []
    await h.writer.deliver(encoded_batch(recs, acks=[lambda: fired.append(1)]))
    assert sink.written == [r for r in recs if r not in poison]
    assert {d.record() for d in h.dead_letters()} == poison
    assert fired == [1]
