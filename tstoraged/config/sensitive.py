"""Which config values must never be shown, and a last line of defence for those that are.

Three things make a value sensitive:

- its field is a :data:`~tstoraged.config.Secret`, or is marked :class:`Sensitive` (a URL
  carrying credentials, an API key: validated like any value, masked wherever it is shown);
- its key *looks* secret (:func:`looks_secret`: ``password``, ``token``, ``api_key``, and
  misspellings such as ``passwrd``), known to the model or not;
- its key is unknown inside a table that holds secrets (``[tstorage.tls] key_pasword``): a
  typo of a secret key must not print the secret in the "unknown key" error.

Config errors and ``tstoraged check`` mask such values. In addition, every sensitive value of
a loaded config is remembered (:func:`remember`) and :func:`scrub` replaces it in any text, so
a secret that reaches a log line by another way (an exception message, a library's log) is
still masked there.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast

from pydantic import GetCoreSchemaHandler, SecretBytes, SecretStr
from pydantic_core import core_schema

__all__ = [
    "MASK",
    "Sensitive",
    "SensitiveStr",
    "field_is_sensitive",
    "looks_secret",
    "model_holds_secrets",
    "remember",
    "scrub",
]

MASK = "**********"
"""What a sensitive value is shown as (the mask pydantic uses for secrets)."""

_SECRET_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
    "apikey",
    "authorization",
    "cookie",
)
"""Words that make a key secret when one of its parts is (close to) one of them."""
_SHORT_SECRET_PARTS = frozenset({"pwd", "pw", "pass", "psk"})
_PATH_SUFFIXES = ("_file", "_path", "_dir")
"""A key naming where a secret is stored holds a path, not the secret."""
_PART = re.compile(r"[^a-z0-9]+")
_MIN_REMEMBERED = 4
"""Shorter values are not scrubbed from text: "on" or "1" would mangle every line."""


def looks_secret(name: object) -> bool:
    """True when a key's name says its value is a secret.

    ``password``, ``mqtt_password``, ``api_key``, ``AccessToken`` and close misspellings
    (``passwrd``, ``secert``) do; ``key`` (the key mapping) and ``key_file`` do not. It errs
    on the side of masking: a masked number costs less than a printed secret. Names ending in
    ``_file``, ``_path`` or ``_dir`` are not secret: they say where a secret is kept.
    """
    if not isinstance(name, str):
        return False
    text = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    if text.endswith(_PATH_SUFFIXES):
        return False
    parts = [part for part in _PART.split(text) if part]
    if not parts:
        return False
    if len(parts) > 1 and parts[-1] == "key":
        return True  # api_key, private_key, access_key; but not `key` (the key mapping)
    for part in parts:
        if part in _SHORT_SECRET_PARTS or any(word in part for word in _SECRET_WORDS):
            return True
        if len(part) >= 5 and difflib.get_close_matches(part, _SECRET_WORDS, n=1, cutoff=0.8):
            return True
    return False


@dataclass(frozen=True)
class Sensitive:
    """Field marker: validate the value as usual, but never show it.

    ``url: Annotated[AnyUrl, Sensitive()]`` keeps the URL validation; ``tstoraged check``
    prints ``**********``, config errors mask the value, and log lines that contain it have it
    replaced. The code reads the value as it is (unlike :data:`~tstoraged.config.Secret`,
    which is wrapped in a ``SecretStr``). For a password that should also be loadable from a
    file or a systemd credential, use ``Secret``.
    """

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source)
        # Masked whenever the config is dumped as JSON (which `tstoraged check` does); a
        # Python dump keeps the value, so a config can be copied and validated again.
        masked: dict[str, Any] = {
            **schema,
            "serialization": core_schema.plain_serializer_function_ser_schema(
                _masked, when_used="json"
            ),
        }
        return cast("core_schema.CoreSchema", masked)


def _masked(value: object) -> str:
    return MASK


SensitiveStr = Annotated[str, Sensitive()]
"""A string that is validated as usual and never shown (an API key, a URL with a token)."""


def _metadata_sensitive(metadata: Iterable[object]) -> bool:
    return any(isinstance(item, Sensitive) for item in metadata)


def _annotation_secret(annotation: object) -> bool:
    """A SecretStr/SecretBytes, or Sensitive-annotated type, anywhere inside ``annotation``."""
    if annotation in (SecretStr, SecretBytes):
        return True
    metadata = getattr(annotation, "__metadata__", None)
    if metadata is not None and _metadata_sensitive(metadata):
        return True
    return any(_annotation_secret(arg) for arg in getattr(annotation, "__args__", ()) or ())


def field_is_sensitive(field: Any) -> bool:
    """True for a pydantic ``FieldInfo`` of a Secret or a Sensitive field."""
    return _metadata_sensitive(field.metadata) or _annotation_secret(field.annotation)


def model_holds_secrets(model: Any) -> bool:
    """True when a model class has a Secret or Sensitive field (or one whose name looks so)."""
    fields: Mapping[str, Any] = getattr(model, "model_fields", {})
    return any(field_is_sensitive(field) or looks_secret(name) for name, field in fields.items())


_remembered: set[str] = set()
_lock = threading.Lock()


def remember(values: Iterable[object]) -> None:
    """Remember sensitive values, so that :func:`scrub` masks them in any text from now on."""
    texts = []
    for value in values:
        if isinstance(value, SecretStr | SecretBytes):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and len(value) >= _MIN_REMEMBERED:
            texts.append(value)
            # The same value as it appears inside a JSON string or a repr().
            texts.append(json.dumps(value)[1:-1])
            texts.append(repr(value)[1:-1])
    with _lock:
        _remembered.update(texts)


def scrub(text: str) -> str:
    """``text`` with every remembered sensitive value replaced by :data:`MASK`."""
    if not _remembered:
        return text
    # Longest first: a secret containing another is replaced whole.
    for value in sorted(_remembered, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text
