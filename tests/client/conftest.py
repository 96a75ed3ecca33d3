"""Fixtures of the client tests: one facade over Channel and AsyncChannel.

Channel tests are written once, as coroutines against :class:`Client`, and run for both the
blocking and the asyncio channel (the ``kind`` parameter). The blocking channel is called
directly from the test coroutine: its peers run in other threads, so blocking is fine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trustme

from tstorage_client.channel import Channel
from tstorage_client.channel_async import AsyncChannel
from tstorage_client.payload_type import PayloadType, StructPayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import Response, ResponseAcq, ResponseGet, ResponsePut

KEY_MIN, KEY_MAX = Key.min(), Key.max()


class Client:
    """Uniform async calls onto a Channel or an AsyncChannel."""

    def __init__(
        self, kind: str, host: str, port: int, payload_type: PayloadType[Any], **options: Any
    ) -> None:
        self.kind = kind
        cls = Channel if kind == "sync" else AsyncChannel
        self.channel: Any = cls(host, port, payload_type, **options)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.channel, name)(*args, **kwargs)
        return await result if self.kind == "async" else result

    async def connect(self) -> Response:
        return await self._call("connect")  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._call("close")

    @property
    def connected(self) -> bool:
        return bool(self.channel.connected)

    async def put(self, records: Any, **kwargs: Any) -> ResponsePut:
        return await self._call("put", records, **kwargs)  # type: ignore[no-any-return]

    async def puta(self, records: Any, **kwargs: Any) -> ResponsePut:
        return await self._call("puta", records, **kwargs)  # type: ignore[no-any-return]

    async def put_encoded(self, request: bytes) -> ResponsePut:
        return await self._call("put_encoded", request)  # type: ignore[no-any-return]

    async def get(self, key_min: Key = KEY_MIN, key_max: Key = KEY_MAX) -> ResponseGet[Any]:
        return await self._call("get", key_min, key_max)  # type: ignore[no-any-return]

    async def get_acq(self, key_min: Key = KEY_MIN, key_max: Key = KEY_MAX) -> ResponseAcq:
        return await self._call("get_acq", key_min, key_max)  # type: ignore[no-any-return]

    async def get_stream(
        self, callback: Callable[[Any], Any], key_min: Key = KEY_MIN, key_max: Key = KEY_MAX
    ) -> ResponseAcq:
        return await self._call("get_stream", key_min, key_max, callback)  # type: ignore[no-any-return]

    async def get_iter(
        self, key_min: Key = KEY_MIN, key_max: Key = KEY_MAX, stop_after: int | None = None
    ) -> tuple[list[Record[Any]], IterRun]:
        """Iterate (stopping early after ``stop_after`` records); (records, the run)."""
        run = IterRun(self.kind, self.channel.get_iter(key_min, key_max))
        records: list[Record[Any]] = []
        async for item in run.items():
            if isinstance(item, Record):
                records.append(item)
                if stop_after is not None and len(records) >= stop_after:
                    break
        return records, run


class IterRun:
    """One get_iter: its items, checked to end with exactly one final ResponseAcq."""

    def __init__(self, kind: str, iterator: Any) -> None:
        self.kind = kind
        self.iterator = iterator
        self.response: ResponseAcq | None = None

    async def items(self) -> AsyncIterator[Record[Any] | ResponseAcq]:
        """The items of the iteration, sync or async; ``response`` is set by the last one."""
        while True:
            try:
                if self.kind == "sync":
                    item = next(self.iterator)
                else:
                    item = await anext(self.iterator)
            except (StopIteration, StopAsyncIteration):
                assert self.response is not None, "get_iter ended without its final response"
                return
            assert self.response is None, "get_iter yielded after its final response"
            if isinstance(item, ResponseAcq):
                self.response = item
            else:
                assert isinstance(item, Record)
            yield item

    async def rest(self) -> list[Record[Any]]:
        """The records still yielded by the iteration (e.g. after leaving it early)."""
        return [item async for item in self.items() if isinstance(item, Record)]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which channel a test runs against."""
    return str(request.param)


@pytest.fixture
def make_client(kind: str) -> Iterator[Callable[..., Client]]:
    """``make_client(host, port, payload_type=StructPayloadType('<d'), **options)``."""
    made: list[Client] = []

    def make(
        host: str, port: int, payload_type: PayloadType[Any] | None = None, **options: Any
    ) -> Client:
        client = Client(kind, host, port, payload_type or StructPayloadType("<d"), **options)
        made.append(client)
        return client

    yield make
    for client in made:
        # Async channels are closed by the tests; closing the writer needs no running loop.
        if client.kind == "sync":
            client.channel.close()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A certificate authority made for this test session."""
    return trustme.CA()
