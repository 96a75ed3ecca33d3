"""Fixtures of the server tests: a running server per backend, raw clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_raw import RawClient

from tstorage_server.testing import RunningServer, serve


@pytest.fixture(params=["memory", "sqlite"])
def server(request: pytest.FixtureRequest, tmp_path) -> Iterator[RunningServer]:
    """A fresh server on port 0, once per storage backend."""
    data_dir = None if request.param == "memory" else tmp_path / "data"
    with serve(memory=data_dir is None, data_dir=data_dir) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[RawClient]:
    """A raw-bytes client connected to ``server``."""
    with RawClient(server.port) as raw:
        yield raw
