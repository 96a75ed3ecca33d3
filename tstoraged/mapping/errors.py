"""The two ways a mapping fails: a bad record (per record) and a bad config (at start)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConfigLoc", "ConfigRefused", "MappingConfigError", "MappingError", "describe"]

ConfigLoc = tuple[str | int, ...]
"""A key path inside one source's config, e.g. ``("key", "mid")`` or ``("payload", "format")``."""

_SHOWN_CHARS = 40


def describe(value: object) -> str:
    """A short ``repr`` of a bad value for an error message (long values are cut)."""
    if isinstance(value, int) and value.bit_length() > 128:
        # repr() of a huge int is slow, and refused beyond 4300 digits.
        return f"<{value.bit_length()}-bit integer>"
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return text


class MappingError(ValueError):
    """One record's fields cannot be mapped; the message names the field and says why.

    For example ``field 'temp': 'abc' is not a number``. The source goes on with the next
    input; the core dead-letters this one with the message as the reason.
    """


def field_error(field: str, value: object, reason: str) -> MappingError:
    """``field 'name': <value> <reason>`` as a :class:`MappingError`."""
    return MappingError(f"field {field!r}: {describe(value)} {reason}")


def missing_field(field: str) -> MappingError:
    """The error for a field that a record does not have."""
    return MappingError(f"field {field!r} is missing")


class MappingConfigError(ValueError):
    """A source's mapping config cannot be compiled.

    ``problems`` lists every problem found as ``(loc, message)``; ``loc`` is the key path
    inside the source's table (``("key", "mid")``), so the config layer can report
    ``sources[2].key.mid: <message>``. ``loc`` and ``reason`` are those of the first problem.
    """

    def __init__(self, problems: Sequence[tuple[ConfigLoc, str]]) -> None:
        if not problems:
            raise ValueError("MappingConfigError needs at least one problem")
        self.problems: tuple[tuple[ConfigLoc, str], ...] = tuple(problems)
        self.loc, self.reason = self.problems[0]
        super().__init__(
            "; ".join(f"{'.'.join(map(str, loc))}: {message}" for loc, message in self.problems)
        )


class ConfigRefused(ValueError):
    """Plugin code refuses a config it cannot work with: the documented way to say no.

    Raise it from a codec factory (or a config model's validator) with a message for the
    operator; ``key`` names the offending key relative to the table being compiled (for a codec
    factory: the source's ``payload`` table), as a name (``"scale"``) or a path
    (``("channels", 2)``). The config is refused -- at start, on reload, in ``tstoraged check``
    -- with one line naming the source and the key::

        /etc/tstoraged/tstoraged.toml: sources[2].payload.scale: must not be 0

    Any other exception from plugin code is caught and reported the same way (with its type),
    but reads as a bug; this one reads as a decision.
    """

    def __init__(self, message: str, *, key: str | Sequence[str | int] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key: ConfigLoc = () if key is None else (key,) if isinstance(key, str) else tuple(key)
