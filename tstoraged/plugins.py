"""The plugin manager: finds plugins, collects their source types and codecs, reports on them.

Plugins are modules listed in the ``tstoraged`` entry-point group; the built-in sources and
codecs are found the same way as third-party ones. ``TSTORAGED_LOAD_PLUGINS`` limits
autoloading to a comma-separated list of entry-point names (empty: none; unset: all), and
tests register plugin objects explicitly with :meth:`PluginManager.register`.

A plugin that fails to import (a missing heavy dependency) does not stop the daemon: it is
listed as unavailable with the reason, and a config that uses one of its source types gets an
error that says what to install.

Mistakes in a plugin are errors of that plugin, shown by ``tstoraged plugins`` (status
``error``) and refusing the config, as pytest does for ``pytest_*`` names: a function named
``tstoraged_*`` marked ``@hookimpl`` that is no hook (with the closest hook's name), a hook
function that is not marked ``@hookimpl`` (pluggy would ignore it), a source type or codec
name another plugin contributes too, a ``config_model`` that is not a ``SourceConfig``, a hook
that raises or returns the wrong type.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import pluggy

from tstoraged import hookspecs
from tstoraged._markers import PROJECT_NAME
from tstoraged.source import Source, SourceConfig, SourceType

if TYPE_CHECKING:
    from tstoraged.cli import Subcommand
    from tstoraged.decoding import DecoderType
    from tstoraged.mapping.codecs import CodecType

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOK_PREFIX",
    "LOAD_PLUGINS_ENV",
    "PluginInfo",
    "PluginManager",
    "PluginSet",
    "installed_plugin_set",
    "plugin_set_changes",
]

ENTRY_POINT_GROUP = PROJECT_NAME
LOAD_PLUGINS_ENV = "TSTORAGED_LOAD_PLUGINS"
HOOK_PREFIX = "tstoraged_"
HOOK_NAMES = frozenset(
    name
    for name, value in vars(hookspecs).items()
    if name.startswith(HOOK_PREFIX) and callable(value)
)


@dataclass(frozen=True)
class PluginInfo:
    """What ``tstoraged plugins`` shows about one plugin."""

    name: str
    """Entry-point name (or the name given to :meth:`PluginManager.register`)."""
    status: Literal["loaded", "unavailable", "error"]
    """``error``: loaded, but with mistakes (see :attr:`errors`); the config is refused."""
    module: str | None = None
    distribution: str | None = None
    version: str | None = None
    source_types: tuple[str, ...] = ()
    codecs: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    decoders: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    reason: str | None = None
    """Why an unavailable plugin could not be loaded."""
    install_hint: str | None = None
    """What to install to make an unavailable plugin load, when that can be told."""
    errors: tuple[str, ...] = ()
    """Mistakes found in this plugin (status ``error``)."""
    descriptions: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """``{"source_types": {name: description}, "codecs": {...}}`` as the plugin gave them."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``tstoraged plugins --json``)."""
        data = asdict(self)
        for key in ("source_types", "codecs", "commands", "decoders", "hooks", "errors"):
            data[key] = list(data[key])
        data["descriptions"] = {kind: dict(items) for kind, items in self.descriptions.items()}
        return data


@dataclass
class _Origin:
    """Where a registered plugin came from (for reporting)."""

    module: str | None = None
    distribution: str | None = None
    version: str | None = None


@dataclass
class _Collected:
    source_types: dict[str, SourceType] = field(default_factory=dict)
    codecs: dict[str, CodecType[Any]] = field(default_factory=dict)
    commands: dict[str, Subcommand] = field(default_factory=dict)
    command_owners: dict[str, str] = field(default_factory=dict)
    decoders: dict[str, DecoderType[Any]] = field(default_factory=dict)
    decoder_owners: dict[str, str] = field(default_factory=dict)
    owners: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    """Problems by the plugin(s) they concern."""

    def problem(self, message: str, *plugins: str) -> None:
        """Record a problem concerning ``plugins``."""
        self.problems.append(message)
        for plugin in plugins:
            self.errors.setdefault(plugin, []).append(message)


class _NameClash(ValueError):
    """Two plugins contribute a source type or codec of the same name."""

    def __init__(self, message: str, *plugins: str) -> None:
        super().__init__(message)
        self.plugins = plugins


def _descriptions(names: list[str], registry: Mapping[str, Any]) -> dict[str, str]:
    """``{name: description}`` of the contributions that have one."""
    found = {name: str(getattr(registry.get(name), "description", "") or "") for name in names}
    return {name: text for name, text in found.items() if text}


PluginSet = dict[str, tuple[str, str | None, str | None]]
"""Installed plugins: entry-point name -> (module, distribution, version)."""


def installed_plugin_set(env: Mapping[str, str]) -> PluginSet:
    """The plugins installed now (as limited by ``TSTORAGED_LOAD_PLUGINS``), read afresh."""
    wanted = requested_plugin_names(env)
    found: PluginSet = {}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and entry_point.name not in wanted:
            continue
        dist = entry_point.dist
        found.setdefault(
            entry_point.name,
            (entry_point.value, dist.name if dist else None, dist.version if dist else None),
        )
    return found


def plugin_set_changes(before: PluginSet, now: PluginSet) -> dict[str, list[str]]:
    """What was installed, removed or upgraded between two :func:`installed_plugin_set`."""
    changed = [
        f"{name} {before[name][2] or '?'} -> {now[name][2] or '?'}"
        for name in sorted(before.keys() & now.keys())
        if before[name] != now[name]
    ]
    return {
        "installed": sorted(now.keys() - before.keys()),
        "removed": sorted(before.keys() - now.keys()),
        "changed": changed,
    }


def requested_plugin_names(env: Mapping[str, str]) -> set[str] | None:
    """The entry-point names ``TSTORAGED_LOAD_PLUGINS`` allows; None means all."""
    value = env.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _install_hint(entry_point: importlib.metadata.EntryPoint, exc: BaseException) -> str | None:
    dist = entry_point.dist
    if dist is not None:
        extras = dist.metadata.get_all("Provides-Extra") or []
        if entry_point.name in extras:
            return f"pip install '{dist.name}[{entry_point.name}]'"
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if dist is None or top != entry_point.value.split(".")[0]:
            return f"install the package that provides the Python module {top!r}"
    return None


class PluginManager:
    """Loads plugins and gives the core their source types and payload codecs."""

    def __init__(self) -> None:
        self.pluggy = pluggy.PluginManager(PROJECT_NAME)
        self.pluggy.add_hookspecs(hookspecs)
        self._origins: dict[str, _Origin] = {}
        self._unavailable: dict[str, PluginInfo] = {}
        self._collected: _Collected | None = None
        self.loaded_set: PluginSet | None = None
        """The installed plugin set when entry points were loaded (None: none were)."""

    @classmethod
    def from_entry_points(cls, env: Mapping[str, str] | None = None) -> PluginManager:
        """A manager with every installed plugin loaded (as limited by the environment)."""
        manager = cls()
        manager.load_entry_points(os.environ if env is None else env)
        return manager

    def register(
        self,
        plugin: object,
        name: str | None = None,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> str:
        """Register a plugin object or module (tests do this instead of entry points)."""
        registered = self.pluggy.register(plugin, name)
        if registered is None:  # pluggy returns None for a blocked name
            raise ValueError(f"plugin name {name!r} is blocked")
        module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        self._origins[registered] = _Origin(module, distribution, version)
        self._unavailable.pop(registered, None)
        self._collected = None
        return registered

    def load_entry_points(self, env: Mapping[str, str]) -> None:
        """Import and register the plugins of the ``tstoraged`` entry-point group."""
        self.loaded_set = installed_plugin_set(env)
        wanted = requested_plugin_names(env)
        found: set[str] = set()
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if wanted is not None and entry_point.name not in wanted:
                continue
            found.add(entry_point.name)
            self._load_entry_point(entry_point)
        for name in sorted((wanted or set()) - found):
            self._unavailable[name] = PluginInfo(
                name,
                "unavailable",
                reason=f"not installed: no entry point {name!r} in group {ENTRY_POINT_GROUP!r}",
            )

    def _load_entry_point(self, entry_point: importlib.metadata.EntryPoint) -> None:
        dist = entry_point.dist
        distribution = dist.name if dist is not None else None
        version = dist.version if dist is not None else None
        if self.pluggy.has_plugin(entry_point.name):
            other = self._origins[entry_point.name].distribution
            self._unavailable[f"{entry_point.name} ({distribution})"] = PluginInfo(
                entry_point.name,
                "unavailable",
                module=entry_point.value,
                distribution=distribution,
                version=version,
                reason=f"entry-point name {entry_point.name!r} is already used by {other}",
            )
            return
        try:
            plugin = entry_point.load()
            self.register(plugin, entry_point.name, distribution=distribution, version=version)
        except Exception as exc:  # any import-time failure only disables this plugin
            self._unavailable[entry_point.name] = PluginInfo(
                entry_point.name,
                "unavailable",
                module=entry_point.value,
                distribution=distribution,
                version=version,
                reason=f"{type(exc).__name__}: {exc}",
                install_hint=_install_hint(entry_point, exc),
            )

    # -- what the core uses ------------------------------------------------------------------

    @property
    def source_types(self) -> Mapping[str, SourceType]:
        """Source types by name, from every loaded plugin."""
        return self._collect().source_types

    @property
    def codecs(self) -> Mapping[str, CodecType[Any]]:
        """Payload codecs by name, from every loaded plugin."""
        return self._collect().codecs

    @property
    def commands(self) -> Mapping[str, Subcommand]:
        """``tstoraged`` subcommands contributed by plugins, by name."""
        return self._collect().commands

    @property
    def decoders(self) -> Mapping[str, DecoderType[Any]]:
        """Message decoders (``tstoraged_message_decoders``) by name, from every loaded plugin."""
        return self._collect().decoders

    @property
    def problems(self) -> tuple[str, ...]:
        """Errors among the plugins (name clashes, broken hooks); the daemon refuses to start."""
        return tuple(self._collect().problems)

    @property
    def unavailable(self) -> Mapping[str, PluginInfo]:
        """Plugins that could not be loaded, by name."""
        self._collect()
        return dict(self._unavailable)

    def unavailable_hint(self, type_name: str) -> str | None:
        """Why a source type or codec might be missing: a plugin of that name did not load."""
        info = self.unavailable.get(type_name)
        if info is None:
            return None
        where = f" ({info.distribution})" if info.distribution else ""
        hint = f"plugin {info.name!r}{where} is unavailable: {info.reason}"
        return f"{hint}; {info.install_hint}" if info.install_hint else hint

    def plugins(self) -> list[PluginInfo]:
        """Every plugin, loaded or not, sorted by name."""
        collected = self._collect()
        infos = list(self._unavailable.values())
        for name, plugin in self.pluggy.list_name_plugin():
            origin = self._origins.get(name, _Origin())
            sources, codecs = collected.owners.get(name, ([], []))
            commands = [cmd for cmd, owner in collected.command_owners.items() if owner == name]
            decoders = [dec for dec, owner in collected.decoder_owners.items() if owner == name]
            hooks = sorted(caller.name for caller in self.pluggy.get_hookcallers(plugin) or [])
            errors = tuple(collected.errors.get(name, ()))
            descriptions = {
                "source_types": _descriptions(sources, collected.source_types),
                "codecs": _descriptions(codecs, collected.codecs),
            }
            infos.append(
                PluginInfo(
                    name,
                    "error" if errors else "loaded",
                    module=origin.module,
                    distribution=origin.distribution,
                    version=origin.version,
                    source_types=tuple(sources),
                    codecs=tuple(codecs),
                    commands=tuple(commands),
                    decoders=tuple(decoders),
                    hooks=tuple(hooks),
                    errors=errors,
                    descriptions=descriptions,
                )
            )
        return sorted(infos, key=lambda info: info.name)

    # -- collection ----------------------------------------------------------------------------

    def _collect(self) -> _Collected:
        if self._collected is None:
            self._collected = _Collected()
            self._collect_hook("tstoraged_source_types", self._add_source_type)
            self._collect_hook("tstoraged_payload_codecs", self._add_codec)
            self._collect_hook("tstoraged_commands", self._add_command)
            self._collect_hook("tstoraged_message_decoders", self._add_decoder)
            for name, plugin in self.pluggy.list_name_plugin():
                for message in self._hook_name_mistakes(plugin):
                    self._collected.problem(f"plugin {name!r}: {message}", name)
        return self._collected

    def _hook_name_mistakes(self, plugin: object) -> list[str]:
        """``tstoraged_*`` functions that pluggy would not call as the author meant."""
        mistakes = []
        for attribute in sorted(dir(plugin)):
            if not attribute.startswith(HOOK_PREFIX):
                continue
            value = getattr(plugin, attribute, None)
            if not (inspect.isfunction(value) or inspect.ismethod(value)):
                continue  # e.g. an imported module named tstoraged_something
            marked = self.pluggy.parse_hookimpl_opts(plugin, attribute) is not None
            closest = difflib.get_close_matches(attribute, sorted(HOOK_NAMES), n=1, cutoff=0.6)
            hint = f" (did you mean {closest[0]!r}?)" if closest else ""
            if marked and attribute not in HOOK_NAMES:
                known = ", ".join(sorted(HOOK_NAMES))
                mistakes.append(f"unknown hook {attribute!r}{hint}; the hooks are: {known}")
            elif not marked and attribute in HOOK_NAMES:
                mistakes.append(
                    f"{attribute}() is not marked @tstoraged.hookimpl, so it is never called"
                )
            elif (
                not marked
                and closest
                and difflib.SequenceMatcher(None, attribute, closest[0]).ratio() >= 0.8
            ):
                mistakes.append(
                    f"{attribute}() looks like the hook {closest[0]!r} but is not one "
                    "(misspelled, and not marked @tstoraged.hookimpl)"
                )
        return mistakes

    def _collect_hook(self, hook_name: str, add: Any) -> None:
        caller = getattr(self.pluggy.hook, hook_name)
        # Call each implementation alone, so that every contribution is attributed to its
        # plugin (for clash messages and `tstoraged plugins`) and one broken plugin is isolated.
        assert self._collected is not None
        for impl in caller.get_hookimpls():
            plugin = impl.plugin_name
            try:
                contributed = list(impl.function() or [])
            except Exception as exc:
                self._collected.problem(
                    f"plugin {plugin!r}: {hook_name}() failed: {type(exc).__name__}: {exc}",
                    plugin,
                )
                continue
            for item in contributed:
                try:
                    add(plugin, item)
                except _NameClash as exc:
                    self._collected.problem(str(exc), *exc.plugins)
                except TypeError as exc:
                    self._collected.problem(f"plugin {plugin!r}: {exc}", plugin)

    def _add_source_type(self, plugin_name: str, source_type: Any) -> None:
        assert self._collected is not None
        if not isinstance(source_type, SourceType):
            raise TypeError(f"expected tstoraged.SourceType items, got {source_type!r}")
        if not (
            isinstance(source_type.config_model, type)
            and issubclass(source_type.config_model, SourceConfig)
        ):
            raise TypeError(
                f"source type {source_type.name!r}: config_model must subclass "
                f"tstoraged.SourceConfig, got {source_type.config_model!r}"
            )
        if not (
            isinstance(source_type.source_class, type)
            and issubclass(source_type.source_class, Source)
        ):
            raise TypeError(
                f"source type {source_type.name!r}: source_class must subclass "
                f"tstoraged.Source, got {source_type.source_class!r}"
            )
        self._claim(plugin_name, "source type", source_type.name, self._collected.source_types)
        self._collected.source_types.setdefault(source_type.name, source_type)
        self._collected.owners.setdefault(plugin_name, ([], []))[0].append(source_type.name)

    def _add_codec(self, plugin_name: str, codec: Any) -> None:
        assert self._collected is not None
        for attribute in ("name", "config_model", "factory"):
            if not hasattr(codec, attribute):
                raise TypeError(f"expected CodecType items (with {attribute!r}), got {codec!r}")
        self._claim(plugin_name, "codec", codec.name, self._collected.codecs)
        self._collected.codecs.setdefault(codec.name, codec)
        self._collected.owners.setdefault(plugin_name, ([], []))[1].append(codec.name)

    def _add_command(self, plugin_name: str, command: Any) -> None:
        from tstoraged.cli import Subcommand, builtin_command_names

        assert self._collected is not None
        if not isinstance(command, Subcommand):
            raise TypeError(f"expected tstoraged.cli.Subcommand items, got {command!r}")
        if command.name in builtin_command_names():
            raise _NameClash(
                f"plugin {plugin_name!r}: command {command.name!r} is a built-in command",
                plugin_name,
            )
        other = self._collected.command_owners.get(command.name)
        if other is not None:
            raise _NameClash(
                f"command {command.name!r} is contributed by both plugin {other!r} "
                f"and plugin {plugin_name!r}",
                other,
                plugin_name,
            )
        self._collected.commands[command.name] = command
        self._collected.command_owners[command.name] = plugin_name

    def _add_decoder(self, plugin_name: str, decoder: Any) -> None:
        from tstoraged.decoding import DecoderType

        assert self._collected is not None
        if not isinstance(decoder, DecoderType):
            raise TypeError(f"expected tstoraged.decoding.DecoderType items, got {decoder!r}")
        other = self._collected.decoder_owners.get(decoder.name)
        if other is not None:
            raise _NameClash(
                f"decoder {decoder.name!r} is contributed by both plugin {other!r} "
                f"and plugin {plugin_name!r}"
            )
        self._collected.decoders[decoder.name] = decoder
        self._collected.decoder_owners[decoder.name] = plugin_name

    def _claim(self, plugin_name: str, kind: str, name: str, registry: Mapping[str, Any]) -> None:
        """Raise when another plugin already contributed ``name``."""
        assert self._collected is not None
        if name not in registry:
            return
        index = 0 if kind == "source type" else 1
        owner = next(
            plugin for plugin, owned in self._collected.owners.items() if name in owned[index]
        )
        raise _NameClash(
            f"{kind} {name!r} is contributed by both plugin {owner!r} and plugin {plugin_name!r}",
            owner,
            plugin_name,
        )
