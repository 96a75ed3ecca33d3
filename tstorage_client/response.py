"""Outcomes of requests: a status, and for reads the acq and the records.

Protocol outcomes are statuses, never exceptions: every channel method returns one of these.
A response is truthy exactly when its status is OK.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
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


@dataclass
class Response:
    """Base response: just the status (``result``)."""

    result: ResponseStatus = ResponseStatus.OK

    @property
    def status(self) -> ResponseStatus:
        """Alias of ``result``."""
        return self.result

    def is_ok(self) -> bool:
        """True when the request succeeded."""
        return self.result == ResponseStatus.OK

    def __bool__(self) -> bool:
        return self.result == ResponseStatus.OK


@dataclass
class ResponsePut(Response):
    """Response to put/puta: the acq range the server assigned (-1, -1 when unknown or for puta)."""

    acq_min: int = -1
    acq_max: int = -1


@dataclass
class ResponseAcq(Response):
    """Response carrying an acq: the range's "acq0" (see ``get_acq``)."""

    acq: int = -1


@dataclass
class ResponseGet(ResponseAcq, Generic[T]):
    """Response to ``get``: the status, the range's acq and the records read."""

    data: RecordsSet[T] = field(default_factory=list)
