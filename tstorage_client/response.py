"""Outcomes of requests: a status, and for reads the acq and the records.

Protocol outcomes are statuses, never exceptions: every channel method returns one of these.
A status, and a response, is truthy exactly when it is OK (``bool(ResponseStatus.OK)`` is
True, unlike a plain ``IntEnum``); both have ``is_ok()``. Responses are frozen, slotted
dataclasses whose first field is ``status``; ``result`` is kept as a read-only alias.
"""

from __future__ import annotations

import enum
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Generic, TypeVar

from tstorage_client.records_set import RecordsSet

__all__ = ["Response", "ResponseAcq", "ResponseGet", "ResponsePut", "ResponseStatus"]

T = TypeVar("T")


class ResponseStatus(enum.IntEnum):
    """Result of a request. Values below 128 come from the server; 128 and up are client-side."""

    OK = 0
    ERROR = -1
    DISCONNECTED = 128
    BAD_REQUEST = 129
    UNPARSEABLE_ENTITY = 130
    NO_MEMORY = 131

    def __bool__(self) -> bool:
        return self is ResponseStatus.OK

    def is_ok(self) -> bool:
        """True for OK."""
        return self is ResponseStatus.OK


_OK = ResponseStatus.OK


@dataclass(frozen=True, slots=True)
class Response:
    """Base response: the ``status`` of the request."""

    status: ResponseStatus

    @property
    def result(self) -> ResponseStatus:
        """Alias of ``status`` (the name earlier versions of this client used)."""
        return self.status

    def is_ok(self) -> bool:
        """True when the request succeeded."""
        return self.status is _OK

    def __bool__(self) -> bool:
        return self.status is _OK


@dataclass(frozen=True, slots=True)
class ResponsePut(Response):
    """Response to put/puta: the acq range the server assigned (-1, -1 when unknown or for puta).

    An extra of this client: the reference answers a plain ``Response``, which this is.
    """

    acq_min: int = -1
    acq_max: int = -1


@dataclass(frozen=True, slots=True)
class ResponseAcq(Response):
    """Response carrying an acq: the range's "acq0" (see ``get_acq``); -1 on failure."""

    acq: int = -1


@dataclass(frozen=True, slots=True)
class ResponseGet(ResponseAcq, Generic[T]):
    """Response to ``get``: the status, the range's acq and the records read (``data``).

    On failure ``data`` holds what was read before it.
    """

    data: RecordsSet[T] = field(default_factory=list)

    def __repr__(self) -> str:
        # The dataclass repr, except that long data is summarised: the repr of a get of
        # millions of records (asyncio debug output, a log line, a traceback) would otherwise
        # be a string several times the size of the records themselves.
        return (
            f"{type(self).__name__}(status={self.status!r}, acq={self.acq!r}, "
            f"data={_summary(self.data)})"
        )


_REPR_ITEMS = 3
"""How many records a long ``ResponseGet.data`` shows in its repr."""


def _summary(data: object) -> str:
    """The repr of ``data`` if short, else its first items and how many there are."""
    try:
        count = len(data)  # type: ignore[arg-type]
    except TypeError:
        return repr(data)
    if count <= 2 * _REPR_ITEMS or not isinstance(data, list):
        return repr(data)
    shown = ", ".join(map(repr, data[:_REPR_ITEMS]))
    return f"[{shown}, ... ({count} items)]"


def _refuse_setattr(self: Response, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_delattr(self: Response, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


# The frozen __setattr__ that dataclass generates refers to the class before slots=True
# rebuilt it, so any assignment that is not to a field failed with a TypeError instead of
# FrozenInstanceError; typing's ``ResponseGet[int](...)`` (which sets __orig_class__ and
# expects an AttributeError) broke on that.
for _cls in (Response, ResponsePut, ResponseAcq, ResponseGet):
    _cls.__setattr__ = _refuse_setattr  # type: ignore[method-assign,assignment]
    _cls.__delattr__ = _refuse_delattr  # type: ignore[method-assign,assignment]
del _cls
