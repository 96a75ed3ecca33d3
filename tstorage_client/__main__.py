"""``python -m tstorage_client``: the example app, and a small CLI for TStorage.

Without a command it runs the reference client's example: put three records, read them
back with ``get_iter`` and print them. Commands::

    python -m tstorage_client [--host H] [--port P] put FILE.csv  # cid,mid,moid,cap,hexpayload
    python -m tstorage_client get [--min c,m,mo,cap,acq] [--max ...] [--csv]
    python -m tstorage_client acq [--min ...] [--max ...]

``put`` streams the file (``-`` for stdin), so any size fits in bounded memory; ``get``
streams the records with ``get_iter``. ``--min``/``--max`` default to the whole key space.
Exit status: 0 on success, 1 when TStorage answers with an error or cannot be reached,
2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ssl
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType, TuplePayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import Response
from tstorage_client.timestamp import now_ns

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class InputError(Exception):
    """A bad line in the put input (reported as FILE:LINE: message)."""


def _key(text: str) -> Key:
    """argparse type: 'c,m,mo,cap,acq' -> Key."""
    parts = text.split(",")
    if len(parts) != 5:
        raise argparse.ArgumentTypeError(f"expected cid,mid,moid,cap,acq, got {text!r}")
    try:
        key = Key(*(int(part) for part in parts))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not integers: {text!r}") from error
    if not key.valid():
        raise argparse.ArgumentTypeError(f"a component is out of range: {text!r}")
    return key


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tstorage_client",
        description="TStorage client: run the example app (no command), or put/get/acq.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="TStorage host (127.0.0.1)")
    parser.add_argument("--port", type=int, default=2025, help="TStorage port (2025)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per I/O step (60)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system CAs)")
    parser.add_argument("--tls-ca", metavar="PEM", help="connect with TLS trusting this CA file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    put = commands.add_parser("put", help="write records from CSV rows cid,mid,moid,cap,hexpayload")
    put.add_argument("file", metavar="FILE.csv", help="CSV file, '-' for stdin")
    put.add_argument("--skip-invalid", action="store_true", help="skip rows with invalid keys")
    put.add_argument("--max-batch-size", type=int, default=None, help="bytes per batch")

    get = commands.add_parser("get", help="print the records of a key range")
    acq = commands.add_parser("acq", help="print the acq of a key range")
    for command in (get, acq):
        command.add_argument("--min", type=_key, default=Key.min(), help="c,m,mo,cap,acq")
        command.add_argument(
            "--max", type=_key, default=Key.max(), help="c,m,mo,cap,acq (exclusive)"
        )
    get.add_argument("--csv", action="store_true", help="CSV rows cid,mid,moid,cap,acq,hexpayload")
    return parser


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_ca:
        return ssl.create_default_context(cafile=args.tls_ca)
    return ssl.create_default_context() if args.tls else None


def _csv_records(stream: TextIO, name: str) -> Iterator[Record[bytes]]:
    """Records from CSV rows; raises InputError naming the line of a bad row."""
    for line, row in enumerate(csv.reader(stream), start=1):
        if not row or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 5:
            raise InputError(
                f"{name}:{line}: expected cid,mid,moid,cap,hexpayload, got {len(row)} fields"
            )
        try:
            cid, mid, moid, cap = (int(field) for field in row[:4])
            payload = bytes.fromhex(row[4])
        except ValueError as error:
            raise InputError(f"{name}:{line}: {error}") from None
        yield Record(Key(cid, mid, moid, cap), payload)


def _failed(what: str, response: Response) -> int:
    print(f"error: {what} failed: {response.result.name}", file=sys.stderr)
    return EXIT_FAILED


def _put(channel: Channel[bytes], args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        if args.file == "-":
            stream, name = sys.stdin, "<stdin>"
        else:
            try:
                stream = stack.enter_context(open(args.file, newline="", encoding="utf-8"))
            except OSError as error:
                print(f"error: {error}", file=sys.stderr)
                return EXIT_USAGE
            name = args.file
        records = _csv_records(stream, name)
        try:
            response = channel.put(records, args.max_batch_size, args.skip_invalid)
        except InputError as error:
            # The stream was cut: the connection is closed, TStorage refuses the partial put.
            print(f"error: {error} (the put was aborted)", file=sys.stderr)
            return EXIT_USAGE
    if not response:
        return _failed("put", response)
    print(f"put OK: acq {response.acq_min} .. {response.acq_max}")
    return EXIT_OK


def _get(channel: Channel[bytes], args: argparse.Namespace) -> int:
    out = csv.writer(sys.stdout, lineterminator="\n") if args.csv else None
    records = channel.get_iter(args.min, args.max)
    for key, value in records:
        if out is not None:
            out.writerow([*key, value.hex()])
        else:
            print("cid={} mid={} moid={} cap={} acq={}".format(*key), "payload=" + value.hex())
    assert records.response is not None
    return EXIT_OK if records.response else _failed("get", records.response)


def _acq(channel: Channel[bytes], args: argparse.Namespace) -> int:
    response = channel.get_acq(args.min, args.max)
    if not response:
        return _failed("acq", response)
    print(response.acq)
    return EXIT_OK


def example(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
    """The reference client's example app: put three records, read them back, print them."""
    payload_type = TuplePayloadType("<if?")
    with Channel(host, port, payload_type, ssl_context=ssl_context) as channel:
        records = [
            Record(Key(1, 4, 7, now_ns()), (10, 24.0, True)),
            Record(Key(2, 5, 8, now_ns()), (10, 34.0, False)),
            Record(Key(3, 6, 9, now_ns()), (10, 44.0, True)),
        ]
        acq_before_put = now_ns()
        put = channel.put(records)
        acq_after_put = now_ns()
        if not put:
            return _failed("put", put)
        # The server's clock sets acq: widen the range to what it reported.
        key_min = Key(cid=1, mid=4, moid=7, cap=0, acq=min(acq_before_put, put.acq_min))
        key_max = Key(cid=4, mid=7, moid=10, cap=now_ns(), acq=max(acq_after_put, put.acq_max + 1))
        found = channel.get_iter(key_min, key_max)
        for r in found:
            print(
                f"Cid: {r.key.cid}, Mid:{r.key.mid}, Moid: {r.key.moid}, Cap:{r.key.cap}, "
                f"Acq: {r.key.acq}, PayloadType( int: {r.value[0]}, float: {r.value[1]}, "
                f"bool: {r.value[2]})"
            )
        assert found.response is not None
        return EXIT_OK if found.response else _failed("get_iter", found.response)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    context = _ssl_context(args)
    if args.command is None:
        return example(args.host, args.port, context)
    channel = Channel(args.host, args.port, BytesPayloadType(), args.timeout, ssl_context=context)
    if not (connected := channel.connect()):
        print(f"error: cannot connect to {args.host}:{args.port}", file=sys.stderr)
        return _failed("connect", connected)
    run = {"put": _put, "get": _get, "acq": _acq}[args.command]
    with channel:
        try:
            return run(channel, args)
        except BrokenPipeError:  # e.g. `get | head`: the reader left, not an error
            sys.stderr.close()
            return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
