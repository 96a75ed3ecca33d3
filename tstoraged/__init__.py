"""tstoraged: the TStorage ingestion daemon.

Everything a plugin needs is importable from the package root::

    from tstoraged import (
        hookimpl, Source, SourceConfig, SourceContext, SourceType, Ack,   # the contract
        Duration, ByteSize, Size, Secret,                                  # config value types
        KeyMapping, CapMapping, PayloadMapping,                            # default mappings
        CodecType, MappingError, ConfigRefused,                            # payload codecs
        PollingSource, PollingConfig, IntervalSchedule, Tick,              # polling
        Sensitive, SensitiveStr,                     # settings never shown (masked like secrets)
        Finding,                                     # what SourceConfig.check_environment says
    )

The package ships ``py.typed``: ``mypy --strict`` on a plugin sees these types.
"""

__version__ = "0.1.0"

from tstoraged._markers import hookimpl, hookspec
from tstoraged.config.secrets import Secret
from tstoraged.config.sensitive import Sensitive, SensitiveStr
from tstoraged.config.units import ByteSize, Duration
from tstoraged.findings import Finding
from tstoraged.mapping.codecs import CodecType
from tstoraged.mapping.errors import ConfigRefused, MappingError
from tstoraged.mapping.model import CapMapping, KeyMapping, PayloadMapping
from tstoraged.polling import PollingConfig, PollingSource
from tstoraged.scheduling import IntervalSchedule, Tick
from tstoraged.source import Ack, Source, SourceConfig, SourceContext, SourceType

Size = ByteSize
"""Alias of :data:`ByteSize`: an int number of bytes, written ``"4MiB"`` or ``4194304``."""

__all__ = [
    "Ack",
    "ByteSize",
    "CapMapping",
    "CodecType",
    "ConfigRefused",
    "Duration",
    "Finding",
    "IntervalSchedule",
    "KeyMapping",
    "MappingError",
    "PayloadMapping",
    "PollingConfig",
    "PollingSource",
    "Secret",
    "Sensitive",
    "SensitiveStr",
    "Size",
    "Source",
    "SourceConfig",
    "SourceContext",
    "SourceType",
    "Tick",
    "__version__",
    "hookimpl",
    "hookspec",
]
