"""The effective configuration as TOML or JSON, secrets masked (``tstoraged check``)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from tstoraged.config.model import Settings
from tstoraged.config.sensitive import MASK, looks_secret

__all__ = ["effective_config", "render_config", "to_toml"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def effective_config(settings: Settings) -> dict[str, Any]:
    """Settings as plain data: human units, secrets as ``**********``, sources with all keys.

    Secret and Sensitive fields mask themselves; a plain string under a key whose name looks
    secret (a plugin's ``api_token: str``) is masked too.
    """
    data: dict[str, Any] = _mask_secret_looking(settings.model_dump(mode="json"))
    return data


def _mask_secret_looking(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: MASK
            if isinstance(item, str) and item and looks_secret(key)
            else _mask_secret_looking(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask_secret_looking(item) for item in value]
    return value


def render_config(settings: Settings, output_format: Literal["toml", "json"] = "toml") -> str:
    """The effective config as TOML (readable, valid config) or JSON (for tools)."""
    data = effective_config(settings)
    if output_format == "json":
        return json.dumps(data, indent=2) + "\n"
    return to_toml(data)


def to_toml(data: Mapping[str, Any]) -> str:
    """Write nested dicts/lists/scalars as TOML. None values are left out (TOML has no null)."""
    lines: list[str] = []
    _table(lines, (), data)
    return "\n".join(lines).strip("\n") + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(_key(part) for part in path)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = [f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value if v is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    scalars = {
        k: v
        for k, v in table.items()
        if v is not None and not isinstance(v, Mapping) and not _is_table_array(v)
    }
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in table.items() if _is_table_array(v)}
    if path and (scalars or not (tables or arrays)):
        lines += ["", f"[{_dotted(path)}]"]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in scalars.items()]
    for key, sub in tables.items():
        _table(lines, (*path, key), sub)
    for key, items in arrays.items():
        for item in items:
            # Nested tables of an array item are written inline: `key = { cid = 7, ... }`.
            lines += ["", f"[[{_dotted((*path, key))}]]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items() if v is not None]
