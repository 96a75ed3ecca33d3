"""Pause the cyclic garbage collector around bulk steps that allocate many short-lived objects.

A step such as fetching thousands of SQL rows creates a container (a row tuple) per record.
Each allocation counts towards the GC's thresholds, so collections run in the middle of the
step and traverse objects that are about to be freed anyway. Pausing the GC for the step
avoids that work; nothing cyclic is created there, so nothing is left for the GC to miss.

Thread-safe and nestable: the GC is resumed when the last pause ends, and only if it was
enabled when the first one began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]

_lock = threading.Lock()
_depth = 0
_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the body with the cyclic GC disabled (restored afterwards, also on errors)."""
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
