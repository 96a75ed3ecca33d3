"""The collection interface records travel in, and the callback type of ``get_stream``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

from tstorage_client.record import Record

__all__ = ["AsyncGetCallback", "GetCallback", "RecordsSet"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class RecordsSet(Protocol[T_co]):
    """A sized, iterable, indexable collection of records; a ``list[Record[T]]`` is one."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Record[T_co]]: ...

    def __getitem__(self, index: int, /) -> Record[T_co]: ...


GetCallback = Callable[[RecordsSet[T]], object]
"""Called by ``get_stream`` with each batch of records (each batch fits in ``memory_limit``)."""

AsyncGetCallback = Callable[[RecordsSet[T]], Awaitable[object] | object]
"""``AsyncChannel.get_stream`` also accepts a coroutine function; its result is awaited."""
