"""The collection interface records travel in, and the callback type of ``get_stream``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

from tstorage_client.record import Record

__all__ = ["AsyncGetCallback", "GetCallback", "RecordsSet"]

T = TypeVar("T")


@runtime_checkable
class RecordsSet(Protocol[T]):
    """A sized, iterable collection of records that can be appended to; a ``list`` is one."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Record[T]]: ...

    def append(self, record: Record[T], /) -> None: ...


GetCallback = Callable[[RecordsSet[T]], object]
"""Called by ``get_stream`` with each batch of records (each batch fits in ``memory_limit``).

Its result is ignored (the reference types it ``-> None``; any callable of one argument does).
"""

AsyncGetCallback = Callable[[RecordsSet[T]], Awaitable[object] | object]
"""``AsyncChannel.get_stream`` also accepts a coroutine function; its result is awaited."""
