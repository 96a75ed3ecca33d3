"""tstoraged: the TStorage ingestion daemon.

Plugin authors need only this package root::

    from tstoraged import hookimpl, Source, SourceConfig, SourceContext, SourceType
    from tstoraged import Sensitive       # mark a setting whose value is never shown
"""

from tstoraged._markers import hookimpl, hookspec
from tstoraged.config.sensitive import Sensitive, SensitiveStr
from tstoraged.findings import Finding
from tstoraged.source import Ack, Source, SourceConfig, SourceContext, SourceType

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Finding",
    "Sensitive",
    "SensitiveStr",
    "Source",
    "SourceConfig",
    "SourceContext",
    "SourceType",
    "__version__",
    "hookimpl",
    "hookspec",
]
