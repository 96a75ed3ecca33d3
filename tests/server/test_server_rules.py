"""The protocol doc's server rules, one by one, over a real socket, for both backends."""

from __future__ import annotations

import struct

import pytest
from server_raw import KEY_MAX, KEY_MIN, RawClient, encode_put, vectors

from tstorage_client.timestamp import now_ns
from tstorage_server.testing import RunningServer

VECTORS = vectors()
INVALID = sorted(name for name, case in VECTORS.items() if case["meaning"]["type"] == "INVALID")
I32_MAX, I64_MAX = 2**31 - 1, 2**63 - 1


def stored(server: RunningServer) -> list:
    with RawClient(server.port) as raw:
        result = raw.get()
        assert result.ok
        return result.records


def test_put_stores_records_with_server_acqs_in_the_reported_range(client: RawClient) -> None:
    status, acq_min, acq_max = client.put(
        [((1, 4, 7, 1234, -1), b"\x0a\0\0\0"), ((2, 5, 8, 9, -1), b"")]
    )
    assert status == 0
    assert acq_max - acq_min == 1
    result = client.get()
    assert result.ok
    assert result.records == [
        ((1, 4, 7, 1234, acq_min), b"\x0a\0\0\0"),
        ((2, 5, 8, 9, acq_max), b""),
    ]


def test_put_acqs_are_tstorage_nanoseconds_from_the_wall_clock(client: RawClient) -> None:
    before = now_ns()
    _, acq_min, _ = client.put([((1, 1, 1, 1, -1), b"x")])
    assert before <= acq_min <= now_ns() + 1


def test_put_acqs_strictly_increase_across_requests_and_connections(server: RunningServer) -> None:
    last = -1
    for _ in range(3):
        with RawClient(server.port) as raw:
            for _ in range(5):
                status, acq_min, acq_max = raw.put(
                    [((1, 1, 1, 1, -1), b"a"), ((1, 1, 1, 1, -1), b"b")]
                )
                assert status == 0
                assert last < acq_min < acq_max
                last = acq_max


def test_same_cap_put_twice_keeps_both_versions_with_distinct_acqs(client: RawClient) -> None:
    client.put([((1, 2, 3, 4, -1), b"first")])
    client.put([((1, 2, 3, 4, -1), b"second")])
    assert [payload for _, payload in client.get().records] == [b"first", b"second"]


def test_puta_keeps_the_client_acq_and_reports_no_range(client: RawClient) -> None:
    assert client.put([((3, 6, 9, 7890, 555), b"p")], with_acq=True) == (0, -1, -1)
    assert client.get().records == [((3, 6, 9, 7890, 555), b"p")]


def test_same_full_key_twice_keeps_one_record_last_write_wins(client: RawClient) -> None:
    client.put([((1, 2, 3, 4, 5), b"old"), ((1, 2, 3, 3, 5), b"other")], with_acq=True)
    client.put([((1, 2, 3, 4, 5), b"new")], with_acq=True)
    client.put([((1, 2, 3, 4, 5), b"a"), ((1, 2, 3, 4, 5), b"newest")], with_acq=True)
    assert client.get().records == [((1, 2, 3, 3, 5), b"other"), ((1, 2, 3, 4, 5), b"newest")]


@pytest.mark.parametrize(
    "key",
    [
        (I32_MAX, 1, 1, 1, 1),
        (1, I64_MAX, 1, 1, 1),
        (1, 1, I32_MAX, 1, 1),
        (1, 1, 1, I64_MAX, 1),
        (1, 1, 1, 1, I64_MAX),
    ],
    ids=["cid", "mid", "moid", "cap", "acq"],
)
def test_record_with_a_key_component_at_its_maximum_is_not_stored_but_put_answers_ok(
    client: RawClient, key: tuple[int, ...]
) -> None:
    status, _, _ = client.put([(key, b"max"), ((1, 1, 1, 1, 1), b"kept")], with_acq=True)
    assert status == 0
    assert client.get().records == [((1, 1, 1, 1, 1), b"kept")]
    if key[4] != I64_MAX:  # PUT: the server sets acq, the other components still count
        assert client.put([(key, b"max")])[0] == 0
        assert [p for _, p in client.get().records] == [b"kept"]


@pytest.mark.parametrize("component", range(5), ids=["cid", "mid", "moid", "cap", "acq"])
def test_get_of_a_range_empty_in_any_component_is_refused_and_closes(
    client: RawClient, component: int
) -> None:
    key_min = [0, -10, -10, -10, -10]
    key_max = [10, 10, 10, 10, 10]
    key_max[component] = key_min[component]
    assert client.get(key_min, key_max).ok is False
    assert client.at_eof()


@pytest.mark.parametrize("component", range(5), ids=["cid", "mid", "moid", "cap", "acq"])
def test_get_acq_of_a_range_empty_in_any_component_is_ok_and_clamped(
    client: RawClient, component: int
) -> None:
    key_min = [0, -10, -10, -10, -10]
    key_max = [10, 10, 10, 10, 10]
    key_max[component] = key_min[component]
    assert client.get_acq(key_min, key_max) == (0, key_max[4])
    assert client.get_acq()[0] == 0  # the connection stays open


def test_get_acq_cases_of_the_vendor_integration_suite(client: RawClient) -> None:
    status, acq0 = client.get_acq([0, 0, 0, 0, 0], [0, *KEY_MAX[1:]])
    assert status == 0
    assert acq0 >= 0
    assert client.get_acq([0, 0, 0, 0, 0], [2, 13, 4, 11, 15]) == (0, 15)


@pytest.mark.parametrize("request_type", ["get", "get_acq"])
@pytest.mark.parametrize("which", ["min", "max"])
def test_range_with_negative_cid_is_refused(
    client: RawClient, request_type: str, which: str
) -> None:
    key_min, key_max = [0, -10, -10, -10, -10], [10, 10, 10, 10, 10]
    (key_min if which == "min" else key_max)[0] = -1
    response = getattr(client, request_type)(key_min, key_max)
    assert (response.ok is False) if request_type == "get" else (response[0] != 0)
    assert client.at_eof()


@pytest.mark.parametrize("request_type", ["get", "get_acq"])
def test_range_starting_in_the_future_is_refused(client: RawClient, request_type: str) -> None:
    future = now_ns() + 3600 * 10**9
    key_min = [0, -10, -10, -10, future]
    response = getattr(client, request_type)(key_min, [10, 10, 10, 10, I64_MAX])
    assert (response.ok is False) if request_type == "get" else (response[0] != 0)


def test_range_starting_now_is_valid(client: RawClient) -> None:
    status, acq0 = client.get_acq()
    assert status == 0
    assert client.get([0, -10, -10, -10, acq0], [10, 10, 10, 10, I64_MAX]).ok


def test_documented_valid_ranges_answer_ok(client: RawClient) -> None:
    assert client.get([0, -10, -10, -10, -10], [10, 10, 10, 10, 10]).ok
    assert client.get(KEY_MIN, KEY_MAX).ok


def test_get_returns_exactly_the_box_half_open_in_every_component(client: RawClient) -> None:
    inside = (5, 5, 5, 5, 5)
    records = [(inside, b"in")]
    for component in range(5):
        for value in (4, 10):  # just below keyMin, exactly keyMax: both outside
            key = list(inside)
            key[component] = value
            records.append((tuple(key), b"out"))
    client.put(records, with_acq=True)
    result = client.get([5, 5, 5, 5, 5], [10, 10, 10, 10, 10])
    assert result.records == [(inside, b"in")]


def test_get_acq_is_never_above_key_max_acq(client: RawClient) -> None:
    client.put([((1, 1, 1, 1, -1), b"x")])
    status, acq0 = client.get_acq([0, 0, 0, 0, 0], [5, 5, 5, 5, 1000])
    assert (status, acq0) == (0, 1000)


def test_every_record_below_acq0_is_visible_and_later_puts_land_at_or_above_it(
    client: RawClient,
) -> None:
    _, _, acq_max = client.put([((1, 1, 1, i, -1), b"x") for i in range(10)])
    status, acq0 = client.get_acq()
    assert status == 0
    assert acq0 > acq_max
    result = client.get([0, KEY_MIN[1], KEY_MIN[2], KEY_MIN[3], KEY_MIN[4]], [*KEY_MAX[:4], acq0])
    assert len(result.records) == 10
    assert result.acq == acq0 or result.acq >= acq0  # the trailer acq is a fresh acq0
    _, next_min, _ = client.put([((1, 1, 1, 99, -1), b"y")])
    assert next_min >= acq0


def test_get_trailer_carries_the_range_acq0_capped_by_key_max(client: RawClient) -> None:
    client.put([((1, 1, 1, 1, -1), b"x")])
    result = client.get([0, 0, 0, 0, 0], [5, 5, 5, 5, 77])
    assert result.ok
    assert result.acq == 77


def test_empty_put_answers_ok(client: RawClient) -> None:
    client.send(bytes.fromhex(VECTORS["put_empty"]["hex"]))
    assert client.put_response()[0] == 0


@pytest.mark.parametrize("name", INVALID)
def test_invalid_vector_gets_an_error_header_or_a_close_and_server_keeps_serving(
    server: RunningServer, name: str
) -> None:
    with RawClient(server.port) as raw:
        raw.send(bytes.fromhex(VECTORS[name]["hex"]))
        if name == "put_truncated_stream":
            raw.sock.shutdown(1)  # the stream really ends there
        reply = b""
        while chunk := raw.sock.recv(4096):
            reply += chunk
        assert reply in (b"", struct.pack("<iQ", -1, 0))
    with RawClient(server.port) as other:
        assert other.put([((1, 1, 1, 1, -1), b"ok")])[0] == 0
        assert [p for _, p in other.get().records] == [b"ok"]


def test_a_failed_put_stores_none_of_its_records(server: RunningServer) -> None:
    good = encode_put([((1, 1, 1, i, -1), b"good") for i in range(100)])
    broken = good[:-4] + struct.pack("<iii", 1, 100, 8)  # a record below the key size, no end
    with RawClient(server.port) as raw:
        raw.send(broken)
        assert raw.put_response()[0] != 0
        assert raw.at_eof()
    assert stored(server) == []


def test_a_put_cut_off_mid_stream_stores_nothing(server: RunningServer) -> None:
    data = encode_put([((1, 1, 1, i, -1), b"x" * 100) for i in range(1000)])
    with RawClient(server.port) as raw:
        raw.send(data[: len(data) // 2])
    assert stored(server) == []


def test_requests_on_one_connection_are_answered_in_order(client: RawClient) -> None:
    client.send(
        encode_put([((1, 1, 1, 1, -1), b"a")])
        + struct.pack("<iQ", 7, 64)
        + struct.pack("<iqiqq", *KEY_MIN)
        + struct.pack("<iqiqq", *KEY_MAX)
        + encode_put([((1, 1, 1, 2, -1), b"b")])
    )
    first = client.put_response()
    status, size = client.header()
    acq0 = struct.unpack("<q", client.recv_exactly(size))[0]
    second = client.put_response()
    assert first[0] == second[0] == status == 0
    assert first[2] < acq0 <= second[1]
