"""Command line: ``tstorage-server [--host H] [--port P] (--data DIR | --memory) ...``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Sequence

from tstorage_server.logs import configure_logging
from tstorage_server.options import ServerOptions
from tstorage_server.server import TStorageServer

__all__ = ["LISTENING_PREFIX", "main", "parse_args", "run"]

LISTENING_PREFIX = "tstorage-server listening on "
"""Start of the one plain line printed once the port is bound: ``... listening on HOST:PORT``."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tstorage-server",
        description="A single-node server speaking the TStorage connector protocol.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2025, help="port (0 picks a free one)")
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--data",
        metavar="DIR",
        default="./tstorage-data",
        help="directory of the SQLite database (default ./tstorage-data)",
    )
    store.add_argument("--memory", action="store_true", help="keep records in memory only")
    parser.add_argument(
        "--idle-timeout", type=float, default=300.0, help="close silent connections (seconds)"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1024,
        help="connections served at once; beyond it a client gets an error and is closed "
        "(default 1024; each may buffer one 32 MiB record)",
    )
    parser.add_argument(
        "--frame-timeout",
        type=float,
        default=10.0,
        help="seconds a request header and its record frames may take to arrive (default 10)",
    )
    parser.add_argument(
        "--min-rate",
        type=int,
        default=4096,
        help="bytes/s a client must sustain inside a request, past --frame-timeout",
    )
    parser.add_argument(
        "--synchronous",
        choices=("normal", "full"),
        default="normal",
        help="SQLite durability: normal survives process kill, full also power loss",
    )
    parser.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain")
    parser.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log lines as JSON or for a terminal (default auto: console on a terminal)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> ServerOptions:
    """Options from the command line (exits with a usage message on bad arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as error:
            parser.error(f"cannot load --tls-cert/--tls-key: {error}")
    configure_logging(args.log_format)
    return ServerOptions(
        host=args.host,
        port=args.port,
        data_dir=None if args.memory else args.data,
        ssl_context=context,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        frame_timeout=args.frame_timeout,
        min_rate=args.min_rate,
        synchronous=args.synchronous,
    )


async def run(options: ServerOptions) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (requests in flight finish)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # The handler only schedules the stop; the shutdown itself runs in this task.
        loop.add_signal_handler(signum, stop.set)
    server = await TStorageServer.start(options)
    # Printed only once signals are handled: a supervisor may stop us right after this line.
    print(f"{LISTENING_PREFIX}{server.host}:{server.port}", flush=True)
    await server.serve_until(stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tstorage-server`` console script."""
    options = parse_args(argv)
    try:
        asyncio.run(run(options))
    except OSError as error:
        print(f"tstorage-server: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
