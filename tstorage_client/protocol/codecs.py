"""Which records codec a payload type gets: the generic one, or the numpy bulk codec."""

from __future__ import annotations

import sys
from typing import Any

from tstorage_client.payload_type import PayloadType
from tstorage_client.protocol._codec import RecordCodec, RecordsCodec

__all__ = ["codec_for"]


def codec_for(payload_type: PayloadType[Any]) -> RecordsCodec:
    """The codec the protocol core uses for ``payload_type``.

    A ``NumpyPayloadType`` gets the structured-array codec. Its module is looked up among
    the loaded ones (an instance exists only once it is loaded), so choosing a codec never
    imports numpy.
    """
    numpy_payload = sys.modules.get("tstorage_client.numpy_payload")
    if numpy_payload is not None and isinstance(payload_type, numpy_payload.NumpyPayloadType):
        from tstorage_client.protocol._numpy_codec import NumpyCodec

        return NumpyCodec(payload_type)
    return RecordCodec(payload_type)
