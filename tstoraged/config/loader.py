"""``load_config``: TOML file + environment overrides + plugin models -> :class:`Settings`.

Everything is validated in one pass and every problem is reported at once, as a
:class:`ConfigError` with one :class:`ConfigProblem` per line.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from tstoraged.config import sensitive
from tstoraged.config.errors import (
    ConfigError,
    ConfigProblem,
    KeyPath,
    is_sensitive,
    mask_in,
    problems_from_validation_error,
)
from tstoraged.config.model import (
    DEFAULT_CONFIG_PATH,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    Settings,
)
from tstoraged.config.secrets import FILE_SUFFIX
from tstoraged.config.sensitive import field_is_sensitive, looks_secret
from tstoraged.config.units import format_byte_size
from tstoraged.mapping.compile import MappingConfigError, compile_mapping
from tstoraged.plugins import LOAD_PLUGINS_ENV, PluginManager
from tstoraged.source import SourceConfig

__all__ = ["CONFIG_PATH_ENV", "RESERVED_ENV", "config_path", "load_config"]

CONFIG_PATH_ENV = "TSTORAGED_CONFIG"
RESERVED_ENV: frozenset[str] = frozenset({CONFIG_PATH_ENV, LOAD_PLUGINS_ENV})
"""``TSTORAGED_*`` variables that are not settings (so not reported as unknown)."""

DEFAULT_CODEC = "struct"
_SETTINGS_ERROR_FIELD = re.compile(r'field "(\w+)"')
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")

OriginOf = Callable[[KeyPath], str]


def config_path(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """The config file to read: ``-c`` if given, else ``$TSTORAGED_CONFIG``, else the default."""
    if explicit is not None:
        return Path(explicit)
    from_env = env.get(CONFIG_PATH_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def load_config(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] = os.environ,
    plugins: PluginManager | None = None,
) -> Settings:
    """Read, merge and validate the whole configuration.

    ``path`` is the TOML file (None: no file, defaults and environment only). ``env`` supplies
    ``TSTORAGED_<SECTION>__<KEY>`` overrides (they beat the file), ``$STATE_DIRECTORY`` and
    ``$CREDENTIALS_DIRECTORY``. ``plugins`` provides the source types and codecs; by default
    the installed plugins are loaded. Raises :class:`ConfigError` listing every problem.
    """
    if plugins is None:
        plugins = PluginManager.from_entry_points(env)
    file_name = str(path) if path is not None else None
    file_data = read_toml(Path(path)) if path is not None else {}
    env_data, env_origins, problems = _read_env(env)
    data = _merge(file_data, env_data)

    def origin_of(key_path: KeyPath) -> str:
        for length in range(len(key_path), 0, -1):
            prefix = key_path[:length]
            variable = env_origins.get(prefix)
            if variable is None and isinstance(prefix[-1], str):
                variable = env_origins.get((*prefix[:-1], prefix[-1] + FILE_SUFFIX))
            if variable is not None:
                return f"environment {variable}"
        return file_name or "defaults"

    problems += [ConfigProblem("plugins", (), problem) for problem in plugins.problems]
    context = {"env": env, "plugins": plugins}
    raw_sources = data.pop("sources", [])
    sources, source_problems = _validate_sources(raw_sources, plugins, context, origin_of)
    core = {**data, "sources": sources}
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(core, context=context)
    except ValidationError as exc:
        problems += problems_from_validation_error(
            exc, model=Settings, data=core, origin_of=origin_of
        )
    problems += source_problems
    if settings is not None:
        problems += _cross_section_problems(settings, origin_of)
    # Whatever a message quotes (a plugin's exception text, a value pydantic repeats), no
    # value of a secret-looking key is shown, and none is logged later by another way.
    secrets = sorted(
        set(_sensitive_strings(file_data, plugins)) | set(_sensitive_strings(env_data, plugins)),
        key=len,
        reverse=True,
    )
    sensitive.remember(secrets)
    if problems or settings is None:
        raise ConfigError([_masked(problem, secrets) for problem in problems])
    sensitive.remember(_settings_secrets(settings))
    return settings


def _masked(problem: ConfigProblem, secrets: Sequence[str]) -> ConfigProblem:
    message, value = problem.message, problem.value
    for secret in secrets:
        message = mask_in(message, secret)
        value = mask_in(value, secret) if value is not None else None
    if (message, value) == (problem.message, problem.value):
        return problem
    return ConfigProblem(problem.origin, problem.path, message, value)


def _source_model(entry: Any, plugins: PluginManager) -> type[BaseModel]:
    """The config model of a ``[[sources]]`` entry's type (the common base if unknown)."""
    type_name = entry.get("type") if isinstance(entry, Mapping) else None
    source_type = plugins.source_types.get(type_name) if isinstance(type_name, str) else None
    return source_type.config_model if source_type is not None else SourceConfig


def _sensitive_strings(data: Mapping[str, Any], plugins: PluginManager) -> Iterator[str]:
    """Every string in the raw config data that sits at a sensitive key path."""
    for key, value in data.items():
        if key == "sources" and isinstance(value, list):
            for entry in value:
                if isinstance(entry, Mapping):
                    yield from _strings_where(_source_model(entry, plugins), entry, ())
        else:
            yield from _strings_where(Settings, {key: value}, ())


_SECRET_REFERENCES = frozenset({"file", "credential"})
"""``{ file = "/path" }`` and ``{ credential = "name" }`` say where a secret is, not what."""


def _strings_where(model: type[BaseModel], value: Any, path: KeyPath) -> Iterator[str]:
    if isinstance(value, Mapping) and len(value) == 1 and set(value) <= _SECRET_REFERENCES:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings_where(model, item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings_where(model, item, (*path, index))
    elif isinstance(value, str) and value and is_sensitive(model, path):
        yield value


def _settings_secrets(model: BaseModel) -> Iterator[object]:
    """The values of every Secret, Sensitive or secret-looking field of a loaded config."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        shown_as_text = value is not None and not isinstance(value, bool | int | float)
        if shown_as_text and (field_is_sensitive(field) or looks_secret(name)):
            yield value if isinstance(value, str | SecretStr) else str(value)
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, BaseModel):
                yield from _settings_secrets(item)


SPOOL_BATCHES = 4
"""A spool must hold this many of the largest batches (a spooled record carries its whole key,
so a batch takes somewhat more room in the spool than on the wire)."""


def _cross_section_problems(settings: Settings, origin_of: OriginOf) -> list[ConfigProblem]:
    """Constraints between sections, reported at the key the operator would change."""
    problems = []
    spool, batch = settings.spool, settings.batch
    if spool.enabled and spool.max_size < SPOOL_BATCHES * batch.max_batch_size:
        path: KeyPath = ("spool", "max_size")
        problems.append(
            ConfigProblem(
                origin_of(path),
                path,
                f"must hold at least {SPOOL_BATCHES} batches: at least "
                f"{format_byte_size(SPOOL_BATCHES * batch.max_batch_size)} with "
                f"batch.max_batch_size = {format_byte_size(batch.max_batch_size)}",
                format_byte_size(spool.max_size),
            )
        )
    return problems


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the config file; a missing file or a syntax error is a ConfigError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [
                ConfigProblem(
                    str(path), (), f"config file not found (give -c FILE or set ${CONFIG_PATH_ENV})"
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), (), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), (), f"not UTF-8 text (byte {exc.start})")]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        if position:
            line, column = position.groups()
            message = (
                f"TOML syntax error at line {line}, column {column}: " + message[: position.start()]
            )
        else:
            message = f"TOML syntax error: {message}"
        raise ConfigError([ConfigProblem(str(path), (), message)]) from None


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment parsing, reading a given mapping instead of os.environ."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._given_env = env
        super().__init__(
            Settings,  # type: ignore[arg-type]  # only its fields are read
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_NESTED_DELIMITER,
            case_sensitive=False,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._given_env.items()}


def _read_env(
    env: Mapping[str, str],
) -> tuple[dict[str, Any], dict[KeyPath, str], list[ConfigProblem]]:
    """Overrides from ``TSTORAGED_<SECTION>__<KEY>``, where each came from, and problems."""
    origins: dict[KeyPath, str] = {}
    problems: list[ConfigProblem] = []
    sections = list(Settings.model_fields)
    for variable in env:
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in RESERVED_ENV:
            continue
        key_path = tuple(variable[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER))
        if key_path[0] in sections:
            origins[key_path] = variable
            continue
        # pydantic-settings ignores variables that match no section; a typo must not pass.
        close = difflib.get_close_matches(key_path[0], sections, n=1)
        hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}...?)" if close else ""
        problems.append(
            ConfigProblem(
                f"environment {variable}",
                (),
                f"unknown setting: no section {key_path[0]!r}{hint}",
            )
        )
    remaining = dict(env)
    while True:
        try:
            return _EnvSource(remaining)(), origins, problems
        except SettingsError as exc:
            # A value that should be JSON (a list or table) is not; report it, drop it, go on.
            match = _SETTINGS_ERROR_FIELD.search(str(exc))
            if match is None:
                problems.append(ConfigProblem("environment", (), str(exc)))
                return {}, origins, problems
            section = match.group(1)
            bad = [name for name in remaining if name.upper() == ENV_PREFIX + section.upper()]
            if not bad:
                problems.append(ConfigProblem("environment", (), str(exc)))
                return {}, origins, problems
            for name in bad:
                del remaining[name]
                problems.append(
                    ConfigProblem(
                        f"environment {name}", (section,), "expected JSON (an array or a table)"
                    )
                )


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge tables; ``override`` wins. Setting ``x`` drops a ``x_file`` sibling and back."""
    merged = dict(base)
    for key, value in override.items():
        if key.endswith(FILE_SUFFIX):
            merged.pop(key.removesuffix(FILE_SUFFIX), None)
        else:
            merged.pop(key + FILE_SUFFIX, None)
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _known(names: Sequence[str]) -> str:
    return ", ".join(sorted(names)) or "none loaded"


def _did_you_mean(name: object, known: Mapping[str, Any], plugins: PluginManager) -> str:
    """``; did you mean 'files'?`` for a misspelt type or codec name, else ``""``.

    Names of plugins that could not be loaded are candidates too (``mqt`` -> ``mqtt``).
    """
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [*known, *plugins.unavailable], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close and close[0] != name else ""


def _missing_hint(plugins: PluginManager, name: str) -> str:
    """Point at unavailable plugins that may provide ``name``."""
    exact = plugins.unavailable_hint(name)
    if exact is not None:
        return f"; {exact}"
    unavailable = sorted(plugins.unavailable)
    return f"; unavailable plugins: {', '.join(unavailable)}" if unavailable else ""


def _validate_sources(
    raw_sources: Any,
    plugins: PluginManager,
    context: Mapping[str, Any],
    origin_of: OriginOf,
) -> tuple[list[SourceConfig], list[ConfigProblem]]:
    """Validate each ``[[sources]]`` entry with its type's model and its payload codec's model."""
    problems: list[ConfigProblem] = []
    if not isinstance(raw_sources, list):
        path: KeyPath = ("sources",)
        message = "expected an array of tables ([[sources]])"
        return [], [ConfigProblem(origin_of(path), path, message)]
    validated: list[SourceConfig] = []
    for index, entry in enumerate(raw_sources):
        prefix: KeyPath = ("sources", index)
        if not isinstance(entry, Mapping):
            problems.append(ConfigProblem(origin_of(prefix), prefix, "expected a table"))
            continue
        source, entry_problems = _validate_source(entry, prefix, plugins, context, origin_of)
        entry_problems += _validate_payload(entry, prefix, plugins, context, origin_of)
        if source is not None and not entry_problems:
            # What only the whole mapping can tell (a lookup table that does not exist, a
            # constant out of its key part's range): compile it, as the daemon will.
            entry_problems += _compile_mapping(source, prefix, plugins, origin_of)
        problems += entry_problems
        if source is not None:
            validated.append(source)
    problems += _duplicate_names(raw_sources, origin_of)
    return validated, problems


def _validate_source(
    entry: Mapping[str, Any],
    prefix: KeyPath,
    plugins: PluginManager,
    context: Mapping[str, Any],
    origin_of: OriginOf,
) -> tuple[SourceConfig | None, list[ConfigProblem]]:
    type_path = (*prefix, "type")
    known = _known(list(plugins.source_types))
    type_name = entry.get("type")
    if type_name is None:
        message = f"missing required key (source types: {known})"
        return None, [ConfigProblem(origin_of(type_path), type_path, message)]
    source_type = plugins.source_types.get(type_name) if isinstance(type_name, str) else None
    if source_type is None:
        message = (
            f"unknown source type{_did_you_mean(type_name, plugins.source_types, plugins)} "
            f"(known: {known}){_missing_hint(plugins, str(type_name))}"
        )
        return None, [ConfigProblem(origin_of(type_path), type_path, message, repr(type_name))]
    model = source_type.config_model
    try:
        return model.model_validate(entry, context=context), []
    except ValidationError as exc:
        return None, problems_from_validation_error(
            exc, model=model, data=entry, prefix=prefix, origin_of=origin_of
        )
    except Exception as exc:  # a plugin's validator raised something pydantic does not wrap
        message = f"config model of source type {type_name!r} failed: {type(exc).__name__}: {exc}"
        return None, [ConfigProblem(origin_of(prefix), prefix, message)]


def _validate_payload(
    entry: Mapping[str, Any],
    prefix: KeyPath,
    plugins: PluginManager,
    context: Mapping[str, Any],
    origin_of: OriginOf,
) -> list[ConfigProblem]:
    """Validate the ``payload`` table's codec-specific keys with the codec's own model."""
    payload = entry.get("payload")
    if not isinstance(payload, Mapping):
        return []  # absent or not a table: the source model reports it
    codec_name = payload.get("codec", DEFAULT_CODEC)
    if not isinstance(codec_name, str):
        return []
    codec = plugins.codecs.get(codec_name)
    if codec is None:
        path = (*prefix, "payload", "codec")
        message = (
            f"unknown payload codec{_did_you_mean(codec_name, plugins.codecs, plugins)} "
            f"(known: {_known(list(plugins.codecs))}){_missing_hint(plugins, codec_name)}"
        )
        return [ConfigProblem(origin_of(path), path, message, repr(codec_name))]
    settings = {key: value for key, value in payload.items() if key != "codec"}
    try:
        codec.config_model.model_validate(settings, context=context)
    except ValidationError as exc:
        return problems_from_validation_error(
            exc,
            model=codec.config_model,
            data=settings,
            prefix=(*prefix, "payload"),
            origin_of=origin_of,
        )
    except Exception as exc:
        path = (*prefix, "payload")
        message = f"codec {codec_name!r} failed to validate: {type(exc).__name__}: {exc}"
        return [ConfigProblem(origin_of(path), path, message)]
    return []


def _compile_mapping(
    source: SourceConfig, prefix: KeyPath, plugins: PluginManager, origin_of: OriginOf
) -> list[ConfigProblem]:
    try:
        compile_mapping(source, plugins.codecs)
    except MappingConfigError as exc:
        return [
            ConfigProblem(origin_of((*prefix, *loc)), (*prefix, *loc), message)
            for loc, message in exc.problems
        ]
    except Exception as exc:  # plugin code (a codec, a key part) must refuse, never crash
        message = f"the mapping failed to compile: {type(exc).__name__}: {exc}"
        return [ConfigProblem(origin_of(prefix), prefix, message)]
    return []


def _duplicate_names(raw_sources: list[Any], origin_of: OriginOf) -> list[ConfigProblem]:
    names = [e.get("name") if isinstance(e, Mapping) else None for e in raw_sources]
    counts = Counter(name for name in names if isinstance(name, str))
    problems = []
    first_index: dict[str, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or counts[name] < 2:
            continue
        if name not in first_index:
            first_index[name] = index
            continue
        path = ("sources", index, "name")
        message = f"duplicate source name (also sources[{first_index[name]}].name)"
        problems.append(ConfigProblem(origin_of(path), path, message, repr(name)))
    return problems
