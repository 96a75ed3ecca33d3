"""tstorage-server: a single-node server that speaks the TStorage connector protocol.

It is the project's embedded default for demos, development and tests: the same client code
runs against it and against a real TStorage cluster, changing only host and port.
``tstorage_server.server.TStorageServer`` is the asyncio server; ``tstorage_server.testing``
runs it in-process or as a subprocess for tests.
"""

from tstorage_server.options import ServerOptions
from tstorage_server.server import TStorageServer

__all__ = ["ServerOptions", "TStorageServer"]
