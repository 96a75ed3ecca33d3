"""The daemon's configuration: schema, human units, secrets, loading and error reporting.

from tstoraged.config import load_config, ConfigError
settings = load_config("/etc/tstoraged/tstoraged.toml")   # raises ConfigError
"""

from tstoraged.config.errors import ConfigError, ConfigProblem, format_path
from tstoraged.config.loader import CONFIG_PATH_ENV, RESERVED_ENV, config_path, load_config
from tstoraged.config.model import (
    DEFAULT_CONFIG_PATH,
    BatchSettings,
    DaemonSettings,
    DeadLetterSettings,
    LogSettings,
    MetricsSettings,
    QueueSettings,
    RetrySettings,
    Settings,
    SpoolSettings,
    TLSSettings,
    TStorageSettings,
)
from tstoraged.config.render import effective_config, render_config
from tstoraged.config.secrets import Secret, SecretFileSiblings
from tstoraged.config.sensitive import Sensitive, SensitiveStr
from tstoraged.config.units import ByteSize, Duration

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "RESERVED_ENV",
    "BatchSettings",
    "ByteSize",
    "ConfigError",
    "ConfigProblem",
    "DaemonSettings",
    "DeadLetterSettings",
    "Duration",
    "LogSettings",
    "MetricsSettings",
    "QueueSettings",
    "RetrySettings",
    "Secret",
    "SecretFileSiblings",
    "Sensitive",
    "SensitiveStr",
    "Settings",
    "SpoolSettings",
    "TLSSettings",
    "TStorageSettings",
    "config_path",
    "effective_config",
    "format_path",
    "load_config",
    "render_config",
]
