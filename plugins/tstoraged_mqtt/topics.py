"""Topic templates: a subscription's filter with named segments that become fields.

    plant/{site}/{mid}/{moid}      -> filter plant/+/+/+ ; plant/a/7/3 -> site=a, mid=7, moid=3
    sensors/+/temp/#               -> filter as written; + and # match without naming
    $share/ingest/plant/{site}/#   -> shared subscription of group "ingest"

A ``{name}`` segment is a single-level wildcard (``+``) whose text becomes field ``name``;
``+`` and ``#`` are matched positionally and name nothing. Every message also gets the field
``topic`` (the whole topic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SHARE_PREFIX", "TopicTemplate"]

SHARE_PREFIX = "$share/"
_NAME = re.compile(r"^\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}$")
_MAX_CACHED_TOPICS = 4096


@dataclass(frozen=True)
class _Level:
    literal: str | None  # None for a wildcard level
    name: str | None  # the field a {name} level fills


class TopicTemplate:
    """A parsed subscription topic: its MQTT filter and its named segments."""

    __slots__ = ("_cache", "_levels", "filter", "names", "share", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.share: str | None = None
        rest = text
        if text.startswith(SHARE_PREFIX):
            group, sep, rest = text[len(SHARE_PREFIX) :].partition("/")
            if not group or not sep or any(c in group for c in "+#{}"):
                raise ValueError(f"{text!r}: a shared subscription is $share/<group>/<filter>")
            self.share = group
        if not rest:
            raise ValueError("the topic filter is empty")
        levels: list[_Level] = []
        filter_levels: list[str] = []
        parts = rest.split("/")
        for index, part in enumerate(parts):
            match = _NAME.match(part)
            if match:
                levels.append(_Level(None, match.group(1)))
                filter_levels.append("+")
            elif part == "+":
                levels.append(_Level(None, None))
                filter_levels.append("+")
            elif part == "#":
                if index != len(parts) - 1:
                    raise ValueError(f"{text!r}: '#' must be the last level")
                levels.append(_Level("#", None))
                filter_levels.append("#")
            elif any(c in part for c in "+#{}"):
                raise ValueError(
                    f"{text!r}: level {part!r} mixes text with a wildcard or a {{name}}; "
                    "a level is text, +, #, or {name}"
                )
            else:
                levels.append(_Level(part, None))
                filter_levels.append(part)
        names = [level.name for level in levels if level.name is not None]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"{text!r}: segment names repeated: {', '.join(duplicated)}")
        if "topic" in names:
            raise ValueError(f"{text!r}: 'topic' is the field of the whole topic; rename it")
        self._levels = tuple(levels)
        self.names = tuple(names)
        self.filter = "/".join(filter_levels)
        self._cache: dict[str, dict[str, str] | None] = {}

    @property
    def subscription(self) -> str:
        """What is sent in SUBSCRIBE: the filter, with the ``$share/<group>/`` prefix if shared."""
        return f"{SHARE_PREFIX}{self.share}/{self.filter}" if self.share else self.filter

    def match(self, topic: str) -> dict[str, str] | None:
        """The fields of ``topic`` (``topic`` and the named segments), or None if it differs.

        Results are cached per topic (devices publish on few topics, over and over); callers
        must not change the returned dict.
        """
        cache = self._cache
        try:
            return cache[topic]
        except KeyError:
            pass
        fields = self._match(topic)
        if len(cache) >= _MAX_CACHED_TOPICS:
            cache.clear()
        cache[topic] = fields
        return fields

    def _match(self, topic: str) -> dict[str, str] | None:
        parts = topic.split("/")
        levels = self._levels
        first = levels[0]
        if topic.startswith("$") and (first.literal is None or first.literal == "#"):
            return None  # MQTT: a wildcard first level does not match topics starting with '$'
        fields = {"topic": topic}
        for index, level in enumerate(levels):
            if level.literal == "#":
                return fields
            if index >= len(parts):
                return None
            if level.literal is not None:
                if parts[index] != level.literal:
                    return None
            elif level.name is not None:
                fields[level.name] = parts[index]
        return fields if len(parts) == len(levels) else None

    def __repr__(self) -> str:
        return f"TopicTemplate({self.text!r})"
