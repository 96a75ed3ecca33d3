"""``python -m tstorage_client``: the example app, and a small CLI for TStorage.

Without a command it runs the reference client's example (``example``): it says which server
it writes to, puts three records, reads them back with ``get_iter`` and prints them.
Commands::

    python -m tstorage_client put FILE.csv       # rows cid,mid,moid,cap[,acq],hexpayload
    python -m tstorage_client get [--min c,m,mo,cap,acq] [--max ...] [--csv]
    python -m tstorage_client acq [--min ...] [--max ...]

The connection options (``--host``, ``--port``, ``--timeout``, ``--tls``, ``--tls-ca``) go
before or after the command; ``--host`` and ``--port`` default to ``$TSTORAGE_HOST`` and
``$TSTORAGE_PORT`` (else 127.0.0.1:2025).

``get --csv`` writes a header line and rows ``cid,mid,moid,cap,acq,hexpayload``; ``put``
reads that back (a dump round-trips: rows with an acq column are written with PUTA, so they
keep their acq) as well as rows without acq (TStorage sets it). A row that is not valid ends
``put`` with its line and reason and nothing stored, unless ``--skip-invalid``, which skips
such rows and says how many. ``put`` streams its input, so any size fits in bounded memory.

Exit status: 0 on success, 1 when TStorage answers with an error or cannot be reached,
2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import ssl
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import TextIO

from tstorage_client import __version__
from tstorage_client.channel import Channel
from tstorage_client.payload_type import BytesPayloadType, TuplePayloadType
from tstorage_client.record import Key, Record
from tstorage_client.response import Response, ResponseAcq
from tstorage_client.timestamp import now_ns

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 2025
CSV_HEADER = ("cid", "mid", "moid", "cap", "acq", "payload")
"""The header line of ``get --csv``; ``put`` skips a header line that starts with ``cid``."""


class InputError(Exception):
    """A bad row in the put input (reported as FILE:LINE: message)."""


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


def _env_port() -> int:
    text = os.environ.get("TSTORAGE_PORT", "")
    if not text:
        return DEFAULT_PORT
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        print(f"error: TSTORAGE_PORT={text!r} is not a port number (1..65535)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return port


def _connection_options() -> argparse.ArgumentParser:
    """The options accepted before and after the command (SUPPRESS: no default here)."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    suppress = argparse.SUPPRESS
    group.add_argument(
        "--host", default=suppress, help="TStorage host ($TSTORAGE_HOST, else 127.0.0.1)"
    )
    group.add_argument(
        "--port", type=int, default=suppress, help="TStorage port ($TSTORAGE_PORT, else 2025)"
    )
    group.add_argument(
        "--timeout", type=float, default=suppress, help="seconds per connect/read/write (60)"
    )
    group.add_argument(
        "--tls", action="store_true", default=suppress, help="connect with TLS (system CAs)"
    )
    group.add_argument("--tls-ca", metavar="PEM", default=suppress, help="TLS, trusting this CA")
    return options


def _parser() -> argparse.ArgumentParser:
    # A fresh copy for every parser: set_defaults below changes the main parser's actions,
    # and a subparser sharing them would then overwrite options given before the command.
    parser = argparse.ArgumentParser(
        prog="python -m tstorage_client",
        description="TStorage client: put, get and acq from the command line. Without a "
        "command it runs the example app (put three records, read them back).",
        parents=[_connection_options()],
    )
    parser.set_defaults(
        host=os.environ.get("TSTORAGE_HOST") or DEFAULT_HOST,
        port=_env_port(),
        timeout=60.0,
        tls=False,
        tls_ca=None,
    )
    parser.add_argument("--version", action="version", version=f"tstorage_client {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    put = commands.add_parser(
        "put",
        parents=[_connection_options()],
        help="write records from CSV rows cid,mid,moid,cap[,acq],hexpayload",
        description="Write records from CSV rows cid,mid,moid,cap,hexpayload (TStorage sets "
        "acq) or cid,mid,moid,cap,acq,hexpayload (written with PUTA: the acq is kept), as "
        "get --csv writes them. Blank lines, # comments and a header line are skipped.",
    )
    put.add_argument("file", metavar="FILE.csv", help="CSV file, '-' for stdin")
    put.add_argument(
        "--skip-invalid", action="store_true", help="skip invalid rows (and say how many)"
    )
    put.add_argument("--max-batch-size", type=int, default=2**31 - 1, help="bytes per batch")

    get = commands.add_parser(
        "get",
        parents=[_connection_options()],
        help="print the records of a key range",
        description="Print the records of a key range (the whole key space by default).",
    )
    acq = commands.add_parser(
        "acq",
        parents=[_connection_options()],
        help="print the acq of a key range",
        description="Print the acq up to which a key range is stable (GET_ACQ).",
    )
    for command in (get, acq):
        command.add_argument("--min", type=_key, default=Key.min(), help="c,m,mo,cap,acq")
        command.add_argument(
            "--max", type=_key, default=Key.max(), help="c,m,mo,cap,acq (exclusive)"
        )
    get.add_argument(
        "--csv", action="store_true", help="CSV: a header, then cid,mid,moid,cap,acq,hexpayload"
    )
    commands.add_parser(
        "example",
        parents=[_connection_options()],
        help="the example app (also what runs without a command)",
        description="Put three records (cids 1-3) and read them back with get_iter.",
    )
    return parser


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.tls_ca:
        return ssl.create_default_context(cafile=args.tls_ca)
    return ssl.create_default_context() if args.tls else None


# --------------------------------------------------------------------------------- put


@dataclass
class _Skipped:
    """Rows ``put --skip-invalid`` left out."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, where: str) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(where)


def _row_record(row: list[str], with_acq: bool) -> Record[bytes]:
    """The record of a CSV row; raises ValueError saying what is wrong."""
    if len(row) != (6 if with_acq else 5):
        layout = "cid,mid,moid,cap,acq,hexpayload" if with_acq else "cid,mid,moid,cap,hexpayload"
        raise ValueError(f"expected {layout} like the rows before, got {len(row)} fields")
    try:
        numbers = [int(text) for text in row[: 5 if with_acq else 4]]
    except ValueError:
        raise ValueError("cid, mid, moid, cap and acq must be integers") from None
    try:
        payload = bytes.fromhex(row[-1])
    except ValueError:
        raise ValueError(f"the payload is not hexadecimal: {row[-1][:40]!r}") from None
    key = Key._make((*numbers, -1)[:5])  # type: ignore[arg-type]
    if not key.valid():
        raise ValueError(f"key {tuple(numbers)} is not valid (cid >= 0, components in range)")
    return Record(key, payload)


def _data_rows(stream: TextIO) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of the rows that hold data: no blanks, comments or header line."""
    for line, row in enumerate(csv.reader(stream), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if row[0].strip() == "cid":  # a header line, e.g. the one get --csv writes
            continue
        yield line, row


def _csv_records(
    rows: Iterator[tuple[int, list[str]]], name: str, with_acq: bool, skipped: _Skipped | None
) -> Iterator[Record[bytes]]:
    """Records of the rows; a bad row raises InputError, or is counted in ``skipped``."""
    for line, row in rows:
        try:
            yield _row_record(row, with_acq)
        except ValueError as error:
            where = f"{name}:{line}: {error}"
            if skipped is None:
                raise InputError(where) from None
            skipped.add(where)


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
        rows = _data_rows(stream)
        first = next(rows, None)
        if first is None:
            print(f"put: {name} holds no rows; nothing to write", file=sys.stderr)
            return EXIT_OK
        with_acq = len(first[1]) == 6  # the layout of get --csv: keep the acq (PUTA)
        skipped = _Skipped() if args.skip_invalid else None
        counted = _Counted(_csv_records(chain([first], rows), name, with_acq, skipped))
        write = channel.puta if with_acq else channel.put
        try:
            response = write(counted, args.max_batch_size)
        except InputError as error:
            # The request was cut before its end: TStorage stores nothing of it.
            print(
                f"error: {error}\nnothing was stored: fix the row, or pass --skip-invalid",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if skipped is not None and skipped.count:
        print(f"skipped {skipped.count} invalid row(s), e.g.:", file=sys.stderr)
        for where in skipped.first:
            print(f"  {where}", file=sys.stderr)
    if not response:
        return _failed("put", response)
    if with_acq:
        print(f"puta OK: {counted.count} records, with the acq of the file")
    else:
        print(f"put OK: {counted.count} records, acq {response.acq_min} .. {response.acq_max}")
    return EXIT_OK


class _Counted:
    """An iterator of records that counts what it hands out."""

    def __init__(self, records: Iterator[Record[bytes]]) -> None:
        self._records = records
        self.count = 0

    def __iter__(self) -> Iterator[Record[bytes]]:
        for record in self._records:
            self.count += 1
            yield record


# ---------------------------------------------------------------------------- get, acq


def _failed(what: str, response: Response) -> int:
    print(f"error: {what} failed: {response.status.name}", file=sys.stderr)
    return EXIT_FAILED


def _get(channel: Channel[bytes], args: argparse.Namespace) -> int:
    out = csv.writer(sys.stdout, lineterminator="\n") if args.csv else None
    if out is not None:
        out.writerow(CSV_HEADER)
    for item in channel.get_iter(args.min, args.max):
        if isinstance(item, Record):
            *key, value = item  # a record is the flat (cid, mid, moid, cap, acq, value)
            if out is not None:
                out.writerow([*key, value.hex()])
            else:
                print("cid={} mid={} moid={} cap={} acq={}".format(*key), "payload=" + value.hex())
        elif not item:
            return _failed("get", item)
    return EXIT_OK


def _acq(channel: Channel[bytes], args: argparse.Namespace) -> int:
    response = channel.get_acq(args.min, args.max)
    if not response:
        return _failed("acq", response)
    print(response.acq)
    return EXIT_OK


# ------------------------------------------------------------------------- the example


def example(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None, timeout: float | None = 60.0
) -> int:
    """The reference client's example app: put three records, read them back, print them."""
    print(
        f"example: writing 3 records (cids 1-3, mids 4-6, moids 7-9, payload "
        f"TuplePayloadType('<if?')) to TStorage at {host}:{port}, then reading them back "
        "with get_iter",
        file=sys.stderr,
    )
    payload_type = TuplePayloadType("<if?")
    channel = Channel(host, port, payload_type, timeout, ssl_context=ssl_context)
    if not (connected := channel.connect()):
        print(f"error: cannot connect to {host}:{port}", file=sys.stderr)
        return _failed("connect", connected)
    with channel:
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
        for item in channel.get_iter(key_min, key_max):
            match item:
                case Record(key=key, value=value):
                    print(
                        f"Cid: {key.cid}, Mid:{key.mid}, Moid: {key.moid}, Cap:{key.cap}, "
                        f"Acq: {key.acq}, PayloadType( int: {value[0]}, float: {value[1]}, "
                        f"bool: {value[2]})"
                    )
                case ResponseAcq() if not item:
                    return _failed("get_iter", item)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parser().parse_args(argv)
    context = _ssl_context(args)
    if args.command in (None, "example"):
        return example(args.host, args.port, context, args.timeout)
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
