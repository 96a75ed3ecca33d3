"""Helpers to compile generated Python source into functions (mapping and codec fast paths).

Generated code gets its constants inlined as literals (``repr`` of ints and strings is always a
valid literal, so config text cannot inject code) and its objects passed in as arguments of
an enclosing ``_build`` function, so that the generated functions read them as fast closure
variables instead of globals.
"""

from __future__ import annotations

import itertools
import linecache
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["build_functions", "indent"]

_ids = itertools.count(1)


def indent(lines: list[str], levels: int) -> list[str]:
    """``lines`` indented by ``levels`` levels of four spaces."""
    prefix = "    " * levels
    return [prefix + line for line in lines]


def build_functions(
    source: str, label: str, namespace: dict[str, Any]
) -> tuple[Callable[..., Any], ...]:
    """Run ``source``'s ``_build(**namespace)`` and return the functions it returns (a tuple).

    The source is registered with :mod:`linecache` under ``<tstoraged LABEL N>``, so tracebacks
    through generated code show its lines, until the first returned function is collected.
    """
    filename = f"<tstoraged {label} {next(_ids)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), {"__builtins__": __builtins__}, scope)  # noqa: S102
    functions = scope["_build"](**namespace)
    functions = functions if isinstance(functions, tuple) else (functions,)
    weakref.finalize(functions[0], linecache.cache.pop, filename, None)
    return tuple(functions)
