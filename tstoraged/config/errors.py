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

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from tstoraged.config.sensitive import MASK as _MASK_TEXT
from tstoraged.config.sensitive import field_is_sensitive, looks_secret, model_holds_secrets
from tstoraged.config.units import (
    format_byte_size,
    format_duration,
    parse_byte_size,
    parse_duration,
)

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "format_path",
    "is_sensitive",
    "mask_in",
    "problems_from_validation_error",
]

KeyPath = tuple[str | int, ...]
"""A key path inside the config: ("sources", 1, "topics", 0)."""

VALUE_REPR_LIMIT = 60
MASK = repr(_MASK_TEXT)
"""A masked value as shown in a problem line."""


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


def _data_path(
    data: Any, loc: Sequence[str | int], kind: str, model: type[BaseModel] | None = None
) -> KeyPath:
    """Keep only the loc parts that are keys or indexes in ``data``.

    A trailing part that is not in the data is kept for a missing-key error, and for an error
    of a key ``model`` declares at that table (a validator run on an absent key's default):
    it names the key.
    """
    path: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list | tuple) and isinstance(part, int):
            current = current[part] if 0 <= part < len(current) else None
        elif (
            position == len(loc) - 1
            and isinstance(current, Mapping)
            and (kind in _KEY_ERRORS or _declares(model, tuple(path), part))
        ):
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


def _model_at(model: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class of the table at ``path``, or None when it is not a model."""
    for candidate in _candidates(_annotation_at(model, path) if path else model):
        if inspect.isclass(candidate) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _declares(model: type[BaseModel] | None, path: KeyPath, key: str | int) -> bool:
    """Whether the table at ``path`` of ``model`` has a field named ``key``."""
    if model is None or not isinstance(key, str):
        return False
    table = _model_at(model, path)
    return table is not None and key in table.model_fields


def _allowed_keys(model: type[BaseModel], parent: Sequence[str | int]) -> list[str]:
    table = _model_at(model, parent)
    return list(table.model_fields) if table is not None else []


def _field_at(model: type[BaseModel], path: Sequence[str | int]) -> FieldInfo | None:
    """The declaration of the key at ``path`` (None for list items and unknown keys)."""
    if not path or not isinstance(path[-1], str):
        return None
    table = _model_at(model, path[:-1])
    return table.model_fields.get(path[-1]) if table is not None else None


def is_sensitive(model: type[BaseModel], path: Sequence[str | int]) -> bool:
    """Whether the value at ``path`` must be masked (see :mod:`tstoraged.config.sensitive`)."""
    for length in range(1, len(path) + 1):
        key = path[length - 1]
        if not isinstance(key, str):
            continue
        if looks_secret(key):
            return True
        table = _model_at(model, path[: length - 1])
        if table is None:
            continue
        field = table.model_fields.get(key)
        if field is None:
            # An unknown key: a typo of a secret key, or any key beside secrets, is masked.
            close = difflib.get_close_matches(key, list(table.model_fields), n=1)
            if model_holds_secrets(table) or (
                close and field_is_sensitive(table.model_fields[close[0]])
            ):
                return True
        elif field_is_sensitive(field):
            return True
    return False


_LIMITS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _unit_formatter(field: FieldInfo | None) -> Any:
    """``format_byte_size`` for a ByteSize field, ``format_duration`` for a Duration."""
    if field is None:
        return None
    for item in field.metadata:
        func = getattr(item, "func", None)
        if func is parse_byte_size:
            return format_byte_size
        if func is parse_duration:
            return format_duration
    return None


def _limit_message(error: ErrorDetails, field: FieldInfo | None) -> str | None:
    """A bound of a size or duration in the unit the operator writes: "less than 2GiB"."""
    limit = _LIMITS.get(error["type"])
    formatter = _unit_formatter(field)
    if limit is None or formatter is None:
        return None
    bound = (error.get("ctx") or {}).get(limit[0])
    if not isinstance(bound, int | float):
        return None
    return f"expected {limit[1]} {formatter(bound)}"


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
    in_units = _limit_message(error, _field_at(model, path))
    if in_units is not None:
        return in_units
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message.replace("Input should be ", "expected ", 1)


_ABSENT = object()


def _value_at(data: Any, path: Sequence[str | int]) -> Any:
    """The value at ``path`` in the input as written, or ``_ABSENT``."""
    current = data
    for part in path:
        in_table = isinstance(current, Mapping) and part in current
        in_list = isinstance(current, list | tuple) and isinstance(part, int)
        in_list = in_list and 0 <= int(part) < len(current)
        if not (in_table or in_list):
            return _ABSENT
        current = current[part]
    return current


def _shown_value(message: str, value: Any, secret: bool) -> str | None:
    """The bad value to show, unless it is a table (may hold secrets) or already quoted."""
    if isinstance(value, Mapping | list | tuple) or value is None:
        return None
    if secret:
        return MASK
    shown = _truncated_repr(value)
    return None if shown in message else shown


MIN_MASKED_IN_TEXT = 4
"""Shorter secrets are masked where they are the value, not searched in message text."""


def mask_in(text: str, value: Any) -> str:
    """``text`` with the (string) ``value`` replaced by the mask: messages may quote it."""
    if text == repr(value):
        return MASK
    if isinstance(value, str) and len(value) >= MIN_MASKED_IN_TEXT:
        text = text.replace(repr(value), MASK).replace(value, _MASK_TEXT)
    return text


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
        (detail, _data_path(data, detail["loc"], detail["type"], model))
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
        written = _value_at(data, local)
        value = detail.get("input") if written is _ABSENT else written
        secret = is_sensitive(model, local)
        if secret:
            message = mask_in(mask_in(message, value), detail.get("input"))
        if message not in merged.setdefault(full, []):
            merged[full].append(message)
        values.setdefault(full, (value, secret))
    problems = []
    for path, messages in merged.items():
        value, secret = values[path]
        text = _join(messages)
        origin = origin_of(path) if origin_of is not None else "config"
        problems.append(ConfigProblem(origin, path, text, _shown_value(text, value, secret)))
    return problems
