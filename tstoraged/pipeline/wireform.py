"""A batch as the PUT/PUTA request that carries it, and back.

A spool keeps batches in this form so the writer can send them as they are: no records are
decoded and encoded again for every batch. Only when TStorage refuses a batch and its records
must be handled one by one (isolated, dead-lettered) is the request decoded back to records.
Both directions use the protocol core: the client's encoder and the server's request parser.
"""

from __future__ import annotations

from tstorage_client.payload_type import BytesPayloadType
from tstorage_client.protocol.client import encode_put
from tstorage_client.protocol.codecs import codec_for
from tstorage_client.protocol.server import (
    NeedData,
    ProtocolError,
    PutaBatch,
    PutBatch,
    PutEnd,
    PutStart,
    RequestParser,
)
from tstorage_client.record import Record
from tstoraged.pipeline.settings import WriteMode

__all__ = ["decode_request", "encode_request"]

_CODEC = codec_for(BytesPayloadType())
_make_record = Record._flat


def encode_request(records: list[Record[bytes]], write_mode: WriteMode) -> bytes:
    """The PUT (or PUTA) request for ``records``, whose keys must all be valid."""
    return b"".join(encode_put(_CODEC, records, with_acq=write_mode == "puta"))


def decode_request(request: bytes) -> list[Record[bytes]]:
    """The records of a PUT/PUTA request (put records get acq -1); ValueError if malformed."""
    parser = RequestParser()
    parser.receive_data(request)
    parser.receive_data(b"")
    records: list[Record[bytes]] = []
    add = records.append
    while True:
        event = parser.next_event()
        if isinstance(event, PutBatch):
            cid = event.cid
            for _, mid, moid, cap, payload in event.rows:
                add(_make_record((cid, mid, moid, cap, -1, payload)))
        elif isinstance(event, PutaBatch):
            cid = event.cid
            for _, mid, moid, cap, acq, payload in event.rows:
                add(_make_record((cid, mid, moid, cap, acq, payload)))
        elif isinstance(event, PutEnd):
            return records
        elif isinstance(event, ProtocolError):
            raise ValueError(f"not a valid PUT/PUTA request: {event.reason}")
        elif isinstance(event, NeedData):
            raise ValueError("truncated PUT/PUTA request")
        elif not isinstance(event, PutStart):
            raise ValueError(f"not a PUT/PUTA request: {type(event).__name__}")
