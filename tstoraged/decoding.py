"""Message decoders: the plugin-extensible step that turns one message's bytes into readings.

A message source (MQTT today) receives opaque payloads. A decoder, chosen per subscription
with ``decoder = { type = "<name>", ... }``, turns one payload into a list of *readings*:
named fields, one mapping per record to be (a JSON array of samples gives several). The
source adds its own fields (topic segments) and hands each reading to the core's mapping.

Decoders are contributed by plugins through the ``tstoraged_message_decoders`` hook as a
:class:`DecoderType`, exactly like payload codecs (:mod:`tstoraged.mapping.codecs`); the
built-in ``json``, ``text``, ``raw``, ``struct`` and ``csv`` decoders come with the ``mqtt``
plugin and are registered the same way, so e.g. a Sparkplug B decoder needs no core change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

__all__ = ["DecodeError", "DecoderType", "MessageDecoder"]

MessageDecoder = Callable[[bytes], Sequence[Mapping[str, Any]]]
"""Per message: payload bytes -> readings; raises :class:`DecodeError` (or ValueError) if bad."""

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class DecodeError(ValueError):
    """The payload cannot be decoded; the message says why (it is logged and dead-lettered)."""


@dataclass(frozen=True)
class DecoderType(Generic[ConfigT]):
    """A message decoder, as a plugin contributes it.

    ``config_model`` validates the decoder's keys of a ``decoder`` table (every key except
    ``type``); it should forbid unknown keys. ``factory`` runs once per source start with the
    validated config and returns the per-message function. That function should be cheap: it
    runs for every message. It may return the same mapping objects it was given by a parser,
    but never keep a reading it returned (the source may add fields to it).
    """

    name: str
    config_model: type[ConfigT]
    factory: Callable[[ConfigT], MessageDecoder]
    description: str = ""

    def build(self, settings: Mapping[str, Any]) -> MessageDecoder:
        """Validate ``settings`` (pydantic ``ValidationError`` if bad) and build the decoder."""
        return self.factory(self.config_model.model_validate(dict(settings)))
