"""Config problems as one line each: where, which key, the bad value, what was expected.

    /etc/tstoraged/tstoraged.toml: sources[1].topics[0] = 7: expected a valid string
    environment TSTORAGED_TSTORAGE__PORT: tstorage.port = 'x': expected a valid integer

Pydantic's error locations are turned into TOML key paths; the labels pydantic adds for union
members (``int``, ``FieldRef``, ``function-after[...]``) are dropped by walking the input data,
so the path names only keys the operator wrote.
"""

from __future__ import annotations

import difflib
import inspect
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

__all__ = ["ConfigError", "ConfigProblem", "format_path", "problems_from_validation_error"]

KeyPath = tuple[str | int, ...]
"""A key path inside the config: ("sources", 1, "topics", 0)."""

VALUE_REPR_LIMIT = 60
MASK = "'**********'"


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration."""

    origin: str
    """Where the value came from: the config file's path, or ``environment TSTORAGED_...``."""
    path: KeyPath
    """Key path inside the config, e.g. ``("sources", 1, "topics", 0)``."""
    message: str
    """What is wrong and what was expected."""
    value: str | None = None
    """The bad value as shown to the operator (repr, truncated; secrets masked), if any."""

    def __str__(self) -> str:
        where = format_path(self.path)
        if self.value is not None:
            where = f"{where} = {self.value}" if where else self.value
        return (
            f"{self.origin}: {where}: {self.message}" if where else f"{self.origin}: {self.message}"
        )


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def format_path(path: Iterable[str | int]) -> str:
    """``("sources", 1, "topics", 0)`` -> ``"sources[1].topics[0]"`` (TOML-style key path)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _truncated_repr(value: Any) -> str:
    """repr, shortened in the middle: the start and the end (a file name) both stay visible."""
    text = repr(value)
    if len(text) <= VALUE_REPR_LIMIT:
        return text
    head = VALUE_REPR_LIMIT // 2
    return text[:head] + "…" + text[len(text) - (VALUE_REPR_LIMIT - head - 1) :]


_KEY_ERRORS = frozenset({"missing", "extra_forbidden"})


def _data_path(data: Any, loc: Sequence[str | int], kind: str) -> KeyPath:
    """Keep only the loc parts that are keys or indexes in ``data``.

    A trailing part that is not in the data is kept for a missing-key error: it names the key.
    """
    path: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list | tuple) and isinstance(part, int):
            current = current[part] if 0 <= part < len(current) else None
        elif position == len(loc) - 1 and kind in _KEY_ERRORS and isinstance(current, Mapping):
            pass  # a missing key of a table
        else:
            continue  # a union member label added by pydantic
        path.append(part)
    return tuple(path)


def _candidates(annotation: Any) -> list[Any]:
    """Flatten Optional/Union/Annotated into the plain types a value may have."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [c for arg in get_args(annotation) for c in _candidates(arg)]
    if hasattr(annotation, "__metadata__"):  # Annotated[T, ...]
        return _candidates(get_args(annotation)[0])
    return [annotation]


def _annotation_at(model: type[BaseModel], path: Sequence[str | int]) -> Any:
    """The declared type at ``path`` inside ``model``, or None when it cannot be known."""
    current: Any = model
    for part in path:
        for candidate in _candidates(current):
            origin = get_origin(candidate)
            if isinstance(part, int) and origin in (list, tuple, Sequence):
                current = get_args(candidate)[0]
                break
            if isinstance(part, str):
                if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
                    if part in candidate.model_fields:
                        current = candidate.model_fields[part].annotation
                        break
                elif origin in (dict, Mapping):
                    current = get_args(candidate)[1]
                    break
        else:
            return None
    return current


def _allowed_keys(model: type[BaseModel], parent: Sequence[str | int]) -> list[str]:
    for candidate in _candidates(_annotation_at(model, parent)):
        if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
            return list(candidate.model_fields)
    return []


def _is_secret(model: type[BaseModel], path: Sequence[str | int]) -> bool:
    return SecretStr in _candidates(_annotation_at(model, path))


def _unknown_key_message(model: type[BaseModel], path: KeyPath) -> str:
    key = path[-1] if path else ""
    allowed = _allowed_keys(model, path[:-1])
    message = f"unknown key {str(key)!r}"
    close = difflib.get_close_matches(str(key), allowed, n=1)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    elif allowed:
        message += f" (allowed: {', '.join(allowed)})"
    return message


def _message(model: type[BaseModel], error: ErrorDetails, path: KeyPath) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_key_message(model, path)
    if kind == "missing":
        return "missing required key"
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message.replace("Input should be ", "expected ", 1)


def _shown_value(message: str, value: Any, secret: bool) -> str | None:
    """The bad value to show, unless it is a table (may hold secrets) or already quoted."""
    if isinstance(value, Mapping | list | tuple) or value is None:
        return None
    if secret:
        return MASK
    shown = _truncated_repr(value)
    return None if shown in message else shown


def _join(messages: list[str]) -> str:
    """Merge the messages of a union's members: "expected a valid integer or a valid string"."""
    if len(messages) > 1 and all(m.startswith("expected ") for m in messages):
        return "expected " + " or ".join(m.removeprefix("expected ") for m in messages)
    return "; ".join(messages)


def _beside_the_point(
    detail: ErrorDetails, local: KeyPath, details: list[tuple[ErrorDetails, KeyPath]]
) -> bool:
    """A union member's "not an int" for a table, when the table member has deeper errors.

    ``moid = { field = "ch", defualt = 1 }`` is meant as a table: report the table's unknown
    key, not also that a table is not an integer or a string.
    """
    if not (isinstance(detail.get("input"), Mapping) and detail["type"].endswith("_type")):
        return False
    return any(len(other) > len(local) and other[: len(local)] == local for _, other in details)


def problems_from_validation_error(
    error: ValidationError,
    *,
    model: type[BaseModel],
    data: Any,
    prefix: KeyPath = (),
    origin_of: Any = None,
) -> list[ConfigProblem]:
    """Translate a pydantic error into config problems.

    ``data`` is the input that was validated (to clean paths), ``prefix`` is where it sits in
    the whole config, and ``origin_of(path)`` names where a path's value came from. Errors of
    the members of one union at the same key are merged into one line.
    """
    details = [
        (detail, _data_path(data, detail["loc"], detail["type"]))
        for detail in error.errors(include_url=False)
    ]
    details = [
        (detail, local)
        for detail, local in details
        if not _beside_the_point(detail, local, details)
    ]
    merged: dict[KeyPath, list[str]] = {}
    values: dict[KeyPath, tuple[Any, bool]] = {}
    for detail, local in details:
        message = _message(model, detail, local)
        full = prefix + local
        if message not in merged.setdefault(full, []):
            merged[full].append(message)
        values.setdefault(full, (detail.get("input"), _is_secret(model, local)))
    problems = []
    for path, messages in merged.items():
        value, secret = values[path]
        text = _join(messages)
        origin = origin_of(path) if origin_of is not None else "config"
        problems.append(ConfigProblem(origin, path, text, _shown_value(text, value, secret)))
    return problems
