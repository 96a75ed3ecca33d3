"""Example tstoraged plugin: a ``loadavg`` source reading the Linux load average."""

from tstoraged_example.source import LoadAvgConfig, LoadAvgSource, parse_loadavg

__all__ = ["LoadAvgConfig", "LoadAvgSource", "parse_loadavg"]
__version__ = "0.1.0"
