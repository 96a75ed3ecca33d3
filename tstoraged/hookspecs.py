"""The plugin contract of tstoraged.

A plugin is a module (or object) with functions marked ``@tstoraged.hookimpl`` whose names
are the hooks below. It is found through the ``tstoraged`` entry-point group::

    [project.entry-points.tstoraged]
    myplugin = "my_package.plugin_module"

Built-in sources and codecs are registered exactly this way. ``TSTORAGED_LOAD_PLUGINS``
limits autoloading to a comma-separated list of entry-point names (empty: load none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tstoraged._markers import hookspec

if TYPE_CHECKING:
    from tstoraged.cli import Subcommand
    from tstoraged.decoding import DecoderType
    from tstoraged.mapping.codecs import CodecType
    from tstoraged.source import SourceType


@hookspec
def tstoraged_source_types() -> list[SourceType]:
    """Contribute source types.

    Called once when the plugin manager is built (before any config is validated).
    Return a list of :class:`tstoraged.SourceType`: the ``type`` name used in ``[[sources]]``,
    the :class:`tstoraged.Source` subclass, and its pydantic config model (a subclass of
    :class:`tstoraged.SourceConfig`). Type names are unique across all plugins; a clash is
    a startup error naming both plugins.
    """


@hookspec
def tstoraged_payload_codecs() -> list[CodecType[Any]]:
    """Contribute payload codecs.

    Called once when the plugin manager is built. Return a list of
    :class:`tstoraged.mapping.codecs.CodecType`: the codec name used as
    ``payload = { codec = "<name>", ... }`` in a source's mapping, its pydantic config model,
    and a factory that compiles a validated config into a function ``fields -> bytes``.
    The factory runs once at start; the function runs per record and should be cheap.
    """


@hookspec
def tstoraged_commands() -> list[Subcommand]:
    """Contribute ``tstoraged <name>`` subcommands (e.g. ``tstoraged modbus probe``).

    Called when the command line is parsed. Return a list of :class:`tstoraged.cli.Subcommand`:
    the command's name and help, a function adding its options to an ``argparse`` parser, and
    the function that runs it (returning the exit status). Keep heavy imports inside ``run``,
    so that ``tstoraged --help`` stays quick. A name already taken by a built-in command or
    another plugin is refused and reported by ``tstoraged plugins``.
    """


@hookspec
def tstoraged_message_decoders() -> list[DecoderType[Any]]:
    """Contribute message decoders (payload bytes -> readings) for message sources like MQTT.

    Called once when the plugin manager is built. Return a list of
    :class:`tstoraged.decoding.DecoderType`: the name used as ``decoder = { type = "<name>",
    ... }`` in a subscription, its pydantic config model, and a factory that builds the
    per-message function ``bytes -> [fields, ...]`` from a validated config.
    """
