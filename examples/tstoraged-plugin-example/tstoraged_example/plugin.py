"""The plugin module named by the entry point: registers the ``loadavg`` source type."""

from tstoraged import SourceType, hookimpl
from tstoraged_example.source import LoadAvgConfig, LoadAvgSource


@hookimpl
def tstoraged_source_types() -> list[SourceType]:
    """Contribute the ``loadavg`` source type."""
    return [
        SourceType(
            name="loadavg",
            source_class=LoadAvgSource,
            config_model=LoadAvgConfig,
            description="The 1/5/15-minute load averages from /proc/loadavg.",
        )
    ]
