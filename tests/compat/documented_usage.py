# The reference client's documented usage, exactly as its documentation shows it.
from tstorage_client.channel import Channel
from tstorage_client.payload_type import TuplePayloadType
from tstorage_client.record import Key, Record
from tstorage_client.timestamp import now_ns

with Channel(host="127.0.0.1", port=2025, payload_type=TuplePayloadType("if?")) as channel:
    before = now_ns()
    assert channel.put([Record(Key(1, 4, 7, now_ns()), (10, 24.0, True))]).is_ok()
    response = channel.get(Key(1, 4, 7, 0, before), Key(4, 7, 10, now_ns(), now_ns()))
    for r in response.data:
        print(r.key.cid, r.value[0])
    for item in channel.get_iter(Key.min(), Key.max()):
        if isinstance(item, Record):
            print(item.key, item.value)
        elif not item.is_ok():
            raise RuntimeError(f"get failed: {item.status}")
