"""Secrets in config: never logged, masked when printed, loadable from files.

A field typed :data:`Secret` accepts three spellings::

    key_password = "literal"                          # discouraged outside tests
    key_password = { file = "/etc/tstoraged/tls.pass" }
    key_password = { credential = "tls-pass" }        # $CREDENTIALS_DIRECTORY/tls-pass

The ``credential`` form reads systemd credentials (``LoadCredential=tls-pass:/path`` in the
unit), so the secret never has to be readable by the daemon's user outside the service.
Core sections also accept the sibling spelling ``key_password_file = "/path"``
(see :class:`SecretFileSiblings`). Values are held as :class:`pydantic.SecretStr`: ``repr``,
``str`` and JSON dumps show ``**********``; ``get_secret_value()`` gives the text.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationInfo, WrapValidator, model_validator
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

__all__ = ["Secret", "SecretFileSiblings", "resolve_secret"]

FILE_SUFFIX = "_file"


def _context_env(info: ValidationInfo | None) -> Mapping[str, str]:
    """The environment given to ``load_config`` (tests pass their own), else the process's."""
    context = info.context if info is not None else None
    env = context.get("env") if isinstance(context, Mapping) else None
    return env if isinstance(env, Mapping) else os.environ


def _read_secret_file(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    # Files written with `echo` end in a newline that is not part of the secret.
    return text.removesuffix("\n").removesuffix("\r")


def resolve_secret(value: Any, env: Mapping[str, str]) -> str:
    """Turn one of the accepted spellings into the secret text; ValueError if impossible."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        ((kind, ref),) = value.items()
        if kind == "file" and isinstance(ref, str) and ref:
            return _read_secret_file(Path(ref), "secret file")
        if kind == "credential" and isinstance(ref, str) and ref and "/" not in ref:
            directory = env.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise ValueError(
                    f"credential {ref!r} needs $CREDENTIALS_DIRECTORY, which is set only under "
                    "systemd (add LoadCredential= or SetCredential= to the unit)"
                )
            return _read_secret_file(Path(directory) / ref, "systemd credential")
    raise ValueError(
        'expected a string, { file = "/path" } or { credential = "name" } '
        "(a systemd credential name, without '/')"
    )


def _validate_secret(
    value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> SecretStr:
    return handler(resolve_secret(value, _context_env(info)))  # type: ignore[no-any-return]


Secret = Annotated[SecretStr, WrapValidator(_validate_secret)]
"""A secret string: literal, ``{ file = ... }`` or ``{ credential = ... }``; always masked."""


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in get_args(annotation)) if get_origin(annotation) else False


class SecretFileSiblings(BaseModel):
    """Mixin: each secret field ``x`` may instead be given as ``x_file = "/path"``.

    ``x_file`` is rewritten to ``x = { file = ... }`` before validation, so errors and the
    effective config name the secret field itself.
    """

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            sibling = name + FILE_SUFFIX
            if sibling not in data or not _is_secret(field.annotation):
                continue
            if name in data:
                raise ValueError(f"set either {name} or {sibling}, not both")
            data[name] = {"file": data.pop(sibling)}
        return data
