"""TStorage Python client: drop-in compatible with the vendor reference client, faster.

Every public name is importable from the package root (``from tstorage_client import
Channel, Key, Record``), as the reference's ``__all__`` promises; the modules of the reference
(``tstorage_client.channel``, ``.record``, ...) hold the same names. Names are loaded on first
use, so ``import tstorage_client.record`` stays light and numpy is imported only for
``NumpyPayloadType`` (listed in ``__all__`` when numpy is installed).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tstorage_client.channel import Channel
    from tstorage_client.channel_async import AsyncChannel
    from tstorage_client.numpy_payload import NumpyPayloadType
    from tstorage_client.payload_type import (
        BytesPayloadType,
        PayloadType,
        StructPayloadType,
        TuplePayloadType,
        UnitPayloadType,
    )
    from tstorage_client.record import Key, Record
    from tstorage_client.records_set import GetCallback, RecordsSet
    from tstorage_client.response import (
        Response,
        ResponseAcq,
        ResponseGet,
        ResponsePut,
        ResponseStatus,
    )
    from tstorage_client.timestamp import (
        Tstoragedatetime,
        from_unix,
        from_unix_ns,
        now,
        now_ns,
        to_unix,
        to_unix_ns,
    )

__version__ = "0.1.0"

_MODULE_OF = {
    "Channel": "channel",
    "AsyncChannel": "channel_async",
    "PayloadType": "payload_type",
    "StructPayloadType": "payload_type",
    "TuplePayloadType": "payload_type",
    "UnitPayloadType": "payload_type",
    "BytesPayloadType": "payload_type",
    "NumpyPayloadType": "payload_type",
    "Key": "record",
    "Record": "record",
    "RecordsSet": "records_set",
    "GetCallback": "records_set",
    "ResponseStatus": "response",
    "Response": "response",
    "ResponseAcq": "response",
    "ResponseGet": "response",
    "ResponsePut": "response",
    "Tstoragedatetime": "timestamp",
    "to_unix": "timestamp",
    "to_unix_ns": "timestamp",
    "from_unix": "timestamp",
    "from_unix_ns": "timestamp",
    "now": "timestamp",
    "now_ns": "timestamp",
}

__all__ = [
    "AsyncChannel",
    "BytesPayloadType",
    "Channel",
    "GetCallback",
    "Key",
    "PayloadType",
    "Record",
    "RecordsSet",
    "Response",
    "ResponseAcq",
    "ResponseGet",
    "ResponsePut",
    "ResponseStatus",
    "StructPayloadType",
    "Tstoragedatetime",
    "TuplePayloadType",
    "UnitPayloadType",
    "from_unix",
    "from_unix_ns",
    "now",
    "now_ns",
    "to_unix",
    "to_unix_ns",
]
if importlib.util.find_spec("numpy") is not None:
    __all__ += ["NumpyPayloadType"]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
