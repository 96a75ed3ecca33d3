"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest

# The suite decides exactly which plugins load (see tstoraged.plugins).
os.environ.setdefault("TSTORAGED_LOAD_PLUGINS", "codecs,generator,files")


@pytest.fixture(scope="session")
def shared_dir() -> str:
    """The repository's ../shared directory (protocol doc and test vectors)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "shared"))
