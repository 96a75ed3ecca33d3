"""tstorage-server: a single-node server that speaks the TStorage connector protocol.

It is the project's embedded default for demos, development and tests: the same client code
runs against it and against a real TStorage cluster, changing only host and port.

    tstorage-server --port 2025 --data ./tstorage-data    # SQLite in WAL mode
    tstorage-server --port 0 --memory                     # prints "... listening on HOST:PORT"

Layout: ``server`` accepts and bounds connections and stops cleanly; ``connection`` serves
one connection's requests in order through the sans-I/O core
(``tstorage_client.protocol.server``); ``rules`` holds the protocol doc's server rules;
``acq`` the acquisition clock; ``storage`` the backends (``memory``, ``sqlite``);
``testing`` runs the server in-process or as a subprocess for tests.

Semantics, where the protocol doc leaves a choice:

* A PUT / PUTA is atomic: its records become visible together when the end guard has arrived
  and the commit is durable, and only then is OK sent. A malformed request, a cut connection
  or a storage failure stores none of it (error header, then close).
* PUT gives each stored record its own acq: TStorage nanoseconds from the wall clock, strictly
  increasing, never below an acq assigned before (the last one is persisted with every
  commit, so this holds across restarts) nor below an acq0 this process reported. The
  response carries the smallest and largest acq assigned; a PUT that stores nothing answers
  (-1, -1), as PUTA does.
* GET_ACQ answers acq0 = the smallest acq held by a PUT still committing, else the next acq
  the clock would assign; capped at keyMax.acq. A GET's trailer carries the same value,
  computed before the read starts. PUTA writes client acqs and can place records below an
  acq0 already reported: that is the caller's decision.
* Records with any key component at its maximum are dropped silently (the PUT answers OK).
"""

from tstorage_server.options import ServerOptions
from tstorage_server.server import TStorageServer

__all__ = ["ServerOptions", "TStorageServer"]
