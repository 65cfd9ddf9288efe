"""The daemon's configuration: a TOML file, validated as a whole at start.

Every key is checked, unknown keys are rejected, and every problem is reported at once as a
``<file>: <key.path>: <reason>`` line. Any secret may be given as ``<key>_env = "VARNAME"``
(read from the environment) instead of in the file; secrets never show in a ``repr``, ``str``
or error. Every key is documented in ``config/ulak.example.toml``.

    settings = load_config("/etc/ulak/ulak.toml")
    for route in settings.routes:
        ...
"""

from gateway.config._load import ConfigError, load_config, parse_config
from gateway.config._routes import RouteConfig
from gateway.config._sections import (
    ClassesConfig,
    ClusterConfig,
    ConsentConfig,
    HttpConfig,
    LimitsConfig,
    LogConfig,
    MessageClass,
    MetricsConfig,
    OtpConfig,
    PipelineConfig,
    QuietHoursConfig,
    RedisConfig,
    StoreConfig,
    TenantConfig,
    WebhooksConfig,
)
from gateway.config._settings import Settings
from gateway.config._values import Rate, SecretUrl

__all__ = [
    "ClassesConfig",
    "ClusterConfig",
    "ConfigError",
    "ConsentConfig",
    "HttpConfig",
    "LimitsConfig",
    "LogConfig",
    "MessageClass",
    "MetricsConfig",
    "OtpConfig",
    "PipelineConfig",
    "QuietHoursConfig",
    "Rate",
    "RedisConfig",
    "RouteConfig",
    "SecretUrl",
    "Settings",
    "StoreConfig",
    "TenantConfig",
    "WebhooksConfig",
    "load_config",
    "parse_config",
]
