"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

# The suite decides exactly which plugins load (see tstoraged.plugins).
os.environ.setdefault("TSTORAGED_LOAD_PLUGINS", "codecs,generator,files")


VECTORS_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "tstorage-vectors.json"
)
"""The byte-exact cases of the wire protocol (docs/protocol.md), kept with the tests."""
