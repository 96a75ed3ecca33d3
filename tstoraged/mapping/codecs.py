"""Payload codecs: the plugin-extensible step that turns a record's fields into payload bytes.

A codec is contributed by a plugin through the ``tstoraged_payload_codecs`` hook as a
:class:`CodecType`. The built-in ``struct``, ``raw`` and ``json`` codecs live in the
``tstoraged_codecs`` plugin and are registered exactly like a third-party codec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from tstoraged.mapping.errors import ConfigLoc, ConfigRefused, MappingConfigError
from tstoraged.mapping.model import PayloadMapping

__all__ = ["CodecType", "PayloadEncoder", "compile_payload_encoder"]

PayloadEncoder = Callable[[Mapping[str, Any]], bytes]
"""Per record: fields -> payload bytes; raises :class:`MappingError` for bad field values."""

ConfigT = TypeVar("ConfigT", bound=BaseModel)


@dataclass(frozen=True)
class CodecType(Generic[ConfigT]):
    """A payload codec, as a plugin contributes it.

    ``config_model`` validates the codec-specific keys of a source's ``payload`` table
    (every key except ``codec``); it should forbid unknown keys. ``factory`` runs once at
    start with the validated config and returns the per-record encoder, which should do as
    little as possible per call: all decisions that depend only on the config belong in the
    factory. A factory refuses a config it cannot work with by raising
    :class:`tstoraged.ConfigRefused` (anything else it raises refuses the config too, reported
    with the exception's type). ``description`` is shown by ``tstoraged plugins``.
    """

    name: str
    config_model: type[ConfigT]
    factory: Callable[[ConfigT], PayloadEncoder]
    description: str = ""

    def validate(self, settings: Mapping[str, Any]) -> ConfigT:
        """The codec's validated config; :class:`MappingConfigError` (``payload.*`` locs) if bad."""
        try:
            return self.config_model.model_validate(dict(settings))
        except ValidationError as exc:
            raise MappingConfigError(
                [(("payload", *error["loc"]), _message(error)) for error in exc.errors()]
            ) from None
        except Exception as exc:  # a validator of the plugin's raised what pydantic does not wrap
            message = f"codec {self.name!r} failed to validate: {type(exc).__name__}: {exc}"
            raise MappingConfigError([(("payload",), message)]) from exc


def _message(error: Any) -> str:
    # pydantic prefixes messages of ValueErrors raised by validators; the key path and the
    # message itself already say that it is a bad value.
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def compile_payload_encoder(
    payload: PayloadMapping, codecs: Mapping[str, CodecType[Any]]
) -> PayloadEncoder:
    """Look up the payload table's codec, validate its settings and build its encoder.

    Every failure is a :class:`MappingConfigError` with ``payload.*`` locations: the codec's
    model refusing the settings, the factory raising :class:`ConfigRefused` (at its ``key``),
    or the factory raising anything else (at ``payload``, with the exception's type).
    """
    codec = codecs.get(payload.codec)
    if codec is None:
        known = ", ".join(sorted(codecs)) or "none installed"
        loc: ConfigLoc = ("payload", "codec")
        raise MappingConfigError([(loc, f"unknown codec {payload.codec!r} (known: {known})")])
    settings = codec.validate(payload.codec_settings())
    try:
        return codec.factory(settings)
    except ConfigRefused as exc:
        raise MappingConfigError([(("payload", *exc.key), exc.message)]) from None
    except MappingConfigError:
        raise
    except Exception as exc:
        # A factory is plugin code: whatever it raises refuses the config, it never escapes
        # into the daemon (a reload must not kill it).
        message = f"codec {payload.codec!r} failed on this config: {type(exc).__name__}: {exc}"
        raise MappingConfigError([(("payload",), message)]) from exc
