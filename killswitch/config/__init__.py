"""The daemon's configuration: load a YAML file (with includes) into frozen dataclasses.

Public names are re-exported here once. The reader primitives every rule kind uses
(:class:`~killswitch.schema.reader.MapReader`, :class:`~killswitch.schema.rule.RuleConfig`)
live below the rules in :mod:`killswitch.schema`; this package sits above the rule registry.
"""

from killswitch.config.loader import (
    Config,
    DaemonConfig,
    MetricsConfig,
    SecretSite,
    load_config,
    load_config_text,
)
from killswitch.config.summary import build_rules, check_secrets, summarize
from killswitch.schema.nodes import ConfigError, ConfigIssue
from killswitch.schema.rule import Action, RuleConfig

__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DaemonConfig",
    "MetricsConfig",
    "RuleConfig",
    "SecretSite",
    "build_rules",
    "check_secrets",
    "load_config",
    "load_config_text",
    "summarize",
]
