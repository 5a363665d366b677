"""YAML configuration -> frozen dataclasses, strictly validated.

Why this is more than ``yaml.safe_load``: a risk manager editing a kill switch's limits at
03:00 must get *every* mistake at once, each pointing at ``file:line:column`` and the key
path (``rules[2].max_drawdown``). So the document is composed with a :class:`LineLoader`
(a ``yaml.SafeLoader``: no arbitrary objects) into located nodes, and validated by walking
those nodes while collecting :class:`ConfigIssue` s. Nothing is built until the walk is
clean; then :class:`ConfigError` carries all issues, or a :class:`Config` is returned.

Rule kinds plug in through :mod:`killswitch.rules.registry`; each rule module parses its own
keys with :class:`MapReader` and returns a frozen subclass of :class:`RuleConfig`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from killswitch.model import Breach, CancelScope, Side
from killswitch.secrets import SecretError, SecretRef, resolve_secret
from killswitch.units import (
    Amount,
    UnitError,
    format_decimal,
    format_duration,
    parse_amount,
    parse_decimal,
    parse_duration_decimal,
    parse_percent,
)
from killswitch.venues.base import BackoffConfig, OxfunConfig, VertexConfig

__all__ = [
    "Action",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DaemonConfig",
    "MapReader",
    "MetricsConfig",
    "RuleConfig",
    "build_rules",
    "check_secrets",
    "load_config",
    "load_config_text",
    "summarize",
]

LITERAL_SECRET = "literal secret in config; use {env: ...}, {file: ...} or {credential: ...}"
VENUE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
RULE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")
# Guards against alias bombs ("billion laughs"): far above any sane config.
MAX_NODES = 100_000
MAX_DURATION_S = Decimal(10 * 365 * 86400)

VERTEX_DEFAULTS: Mapping[str, Any] = {
    "chain_id": 42161,
    "endpoint_address": "0xbbEE07B3e8121227AfCFe1E2B82772246226128e",
    "gateway_ws_url": "wss://gateway.prod.vertexprotocol.com/v1/ws",
    "subscribe_ws_url": "wss://gateway.prod.vertexprotocol.com/v1/subscribe",
    "gateway_rest_url": "https://gateway.prod.vertexprotocol.com/v1",
    "trigger_url": "https://trigger.prod.vertexprotocol.com/v1",
}
VENUE_CLASSES: Mapping[str, type] = {"oxfun": OxfunConfig, "vertex": VertexConfig, "nado": VertexConfig}


# --------------------------------------------------------------------------------------
# Issues
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int
    column: int
    key_path: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        # Severity is left to the caller (`killswitch check` prefixes it).
        path = f"{self.key_path}: " if self.key_path else ""
        return f"{self.file}:{self.line}:{self.column}: {path}{self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = list(issues)
        lines = [str(i) for i in self.issues]
        noun = "error" if len(self.issues) == 1 else "errors"
        super().__init__(f"{len(self.issues)} configuration {noun}:\n" + "\n".join(lines))


# --------------------------------------------------------------------------------------
# Located YAML nodes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    file: str
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True, slots=True)
class YScalar:
    mark: Mark
    value: Any


@dataclass(frozen=True, slots=True)
class YSeq:
    mark: Mark
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class YMap:
    mark: Mark
    # key -> (mark of the key, value node). Keys are unique (duplicates are issues).
    entries: Mapping[str, tuple[Mark, Any]]


YNode = YScalar | YSeq | YMap

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class LineLoader(yaml.SafeLoader):
    """A SafeLoader whose documents become :class:`YMap`/:class:`YSeq`/:class:`YScalar`
    carrying their start marks, with duplicate keys reported instead of silently
    overwritten (PyYAML keeps the last one, which would hide a mistyped limit)."""

    def __init__(self, stream: str, display_name: str, issues: list[ConfigIssue]) -> None:
        super().__init__(stream)
        self.display_name = display_name
        self.issues = issues
        self._n_nodes = 0

    def located_document(self) -> YNode | None:
        node = self.get_single_node()
        if node is None:
            return None
        return self._convert(node, "", frozenset())

    def _mark(self, node: yaml.Node) -> Mark:
        m = node.start_mark
        return Mark(self.display_name, m.line + 1, m.column + 1)

    def _issue(self, mark: Mark, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(mark.file, mark.line, mark.column, path, message))

    def _convert(self, node: yaml.Node, path: str, ancestors: frozenset[int]) -> YNode:
        self._n_nodes += 1
        if self._n_nodes > MAX_NODES:
            raise _TooLarge(self._mark(node))
        mark = self._mark(node)
        if id(node) in ancestors:  # a recursive alias (&a [*a])
            self._issue(mark, path, "recursive YAML alias")
            return YScalar(mark, None)
        inner = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                self._issue(mark, path, f"unsupported YAML tag {node.tag}")
            entries: dict[str, tuple[Mark, YNode]] = {}
            for key_node, value_node in node.value:
                key_mark = self._mark(key_node)
                if key_node.tag == _MERGE_TAG:
                    self._issue(key_mark, path, "YAML merge keys (<<) are not supported; write keys out")
                    continue
                key = self._scalar_value(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    self._issue(key_mark, path, "mapping keys must be plain strings")
                    continue
                child_path = f"{path}.{key}" if path else key
                if key in entries:
                    first = entries[key][0]
                    self._issue(key_mark, child_path, f"duplicate key {key!r} (first defined at line {first.line})")
                    continue
                entries[key] = (key_mark, self._convert(value_node, child_path, inner))
            return YMap(mark, entries)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self._issue(mark, path, f"unsupported YAML tag {node.tag}")
            return YSeq(mark, tuple(self._convert(n, f"{path}[{i}]", inner) for i, n in enumerate(node.value)))
        return YScalar(mark, self._scalar_value(node, path))

    def _scalar_value(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.construct_object(node, deep=True)
        except Exception as exc:  # noqa: BLE001 - third-party constructor on untrusted text
            problem = getattr(exc, "problem", None) or type(exc).__name__
            self._issue(self._mark(node), path, f"invalid YAML value ({problem})")
            return None


class _TooLarge(Exception):
    def __init__(self, mark: Mark) -> None:
        super().__init__("too large")
        self.mark = mark


def _yaml_issue(exc: yaml.YAMLError, display_name: str) -> ConfigIssue:
    if isinstance(exc, yaml.reader.ReaderError):
        return ConfigIssue(display_name, 1, 1, "", f"YAML syntax error: {exc.reason} "
                                                   f"(character #{exc.character:x} at offset {exc.position})"
                           if isinstance(exc.character, int) else f"YAML syntax error: {exc.reason}")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {context + ', ' if context else ''}{problem}"
    return ConfigIssue(display_name, line, column, "", message)


def parse_yaml(text: str, display_name: str, issues: list[ConfigIssue]) -> YNode | None:
    """Compose ``text`` into located nodes; syntax problems become issues, never raise."""
    loader = None
    try:
        loader = LineLoader(text, display_name, issues)  # the reader already checks characters
        return loader.located_document()
    except yaml.YAMLError as exc:
        issues.append(_yaml_issue(exc, display_name))
    except _TooLarge as exc:
        issues.append(ConfigIssue(exc.mark.file, exc.mark.line, exc.mark.column, "",
                                  "document too large (alias expansion?)"))
    except RecursionError:
        issues.append(ConfigIssue(display_name, 1, 1, "", "document nested too deeply"))
    finally:
        if loader is not None:
            loader.dispose()
    return None


# --------------------------------------------------------------------------------------
# Validation context and typed readers
# --------------------------------------------------------------------------------------


class _Invalid:
    """Placeholder returned after an issue was recorded; never reaches a built Config."""

    def __repr__(self) -> str:
        return "<invalid>"


INVALID: Any = _Invalid()


class Ctx:
    """Collects issues during one load. ``base_dir`` resolves relative paths of the file
    currently being validated."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def error(self, mark: Mark, path: str, message: str) -> Any:
        self.issues.append(ConfigIssue(mark.file, mark.line, mark.column, path, message))
        return INVALID

    def warn(self, mark: Mark, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(mark.file, mark.line, mark.column, path, message, "warning"))


def _type_name(node: YNode) -> str:
    if isinstance(node, YMap):
        return "a mapping"
    if isinstance(node, YSeq):
        return "a list"
    v = node.value
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return f"a {type(v).__name__}"


class MapReader:
    """Typed access to one mapping's keys. Every accessor records an issue (and returns
    :data:`INVALID` or the default) instead of raising; :meth:`finish` reports the keys
    nobody asked for as unknown."""

    def __init__(self, ctx: Ctx, node: YMap, path: str, base_dir: Path) -> None:
        self.ctx = ctx
        self.node = node
        self.path = path
        self.base_dir = base_dir
        self._used: set[str] = set()

    # -- plumbing ------------------------------------------------------------------------

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.node.entries

    def raw(self, key: str) -> YNode | None:
        self._used.add(key)
        entry = self.node.entries.get(key)
        return None if entry is None else entry[1]

    def mark_of(self, key: str) -> Mark:
        entry = self.node.entries.get(key)
        return entry[1].mark if entry is not None else self.node.mark

    def error(self, key: str, message: str) -> Any:
        return self.ctx.error(self.mark_of(key), self.key_path(key), message)

    def _get(self, key: str, default: Any, required: bool) -> tuple[YNode | None, Any]:
        node = self.raw(key)
        if node is None:
            if required:
                return None, self.ctx.error(self.node.mark, self.key_path(key), "required key is missing")
            return None, default
        if isinstance(node, YScalar) and node.value is None and not required:
            return None, default
        return node, None

    def finish(self) -> None:
        for key, (key_mark, _) in self.node.entries.items():
            if key not in self._used:
                self.ctx.error(key_mark, self.key_path(key), f"unknown key {key!r}")

    def sub(self, key: str, *, required: bool = False) -> MapReader | None:
        node, fallback = self._get(key, None, required)
        if node is None:
            return None
        if not isinstance(node, YMap):
            self.error(key, f"must be a mapping, got {_type_name(node)}")
            return None
        return MapReader(self.ctx, node, self.key_path(key), self.base_dir)

    # -- scalars -------------------------------------------------------------------------

    def convert(self, key: str, default: Any, fn: Callable[[YNode], Any], *, required: bool = False) -> Any:
        node, fallback = self._get(key, default, required)
        if node is None:
            return fallback
        try:
            return fn(node)
        except (UnitError, ValueError) as exc:
            return self.error(key, str(exc))

    def str(self, key: str, default: Any = None, *, required: bool = False,
            pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] | None = None,
            hint: str = "") -> Any:
        def fn(node: YNode) -> str:
            if not isinstance(node, YScalar) or not isinstance(node.value, str):
                raise ValueError(f"must be a string, got {_type_name(node)}")
            value = node.value
            if choices is not None and value not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")
            if pattern is not None and not pattern.fullmatch(value):
                raise ValueError(hint or f"{value!r} is not valid")
            if not value:
                raise ValueError("must not be empty")
            return value

        return self.convert(key, default, fn, required=required)

    def bool(self, key: str, default: bool) -> Any:
        def fn(node: YNode) -> bool:
            if not isinstance(node, YScalar) or not isinstance(node.value, bool):
                raise ValueError(f"must be true or false, got {_type_name(node)}")
            return node.value

        return self.convert(key, default, fn)

    def int(self, key: str, default: Any = None, *, required: bool = False,
            min_value: int | None = None, max_value: int | None = None) -> Any:
        def fn(node: YNode) -> int:
            value = node.value if isinstance(node, YScalar) else None
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be an integer, got {_type_name(node)}")
            if min_value is not None and value < min_value:
                raise ValueError(f"must be at least {min_value}, got {value}")
            if max_value is not None and value > max_value:
                raise ValueError(f"must be at most {max_value}, got {value}")
            return value

        return self.convert(key, default, fn, required=required)

    def decimal(self, key: str, default: Any = None, *, required: bool = False,
                positive: bool = False, min_value: Decimal | None = None,
                max_value: Decimal | None = None) -> Any:
        def fn(node: YNode) -> Decimal:
            if not isinstance(node, YScalar):
                raise ValueError(f"must be a number, got {_type_name(node)}")
            value = parse_decimal(node.value)
            if positive and value <= 0:
                raise ValueError(f"must be greater than 0, got {format_decimal(value)}")
            if min_value is not None and value < min_value:
                raise ValueError(f"must be at least {format_decimal(min_value)}")
            if max_value is not None and value > max_value:
                raise ValueError(f"must be at most {format_decimal(max_value)}")
            return value

        return self.convert(key, default, fn, required=required)

    def duration(self, key: str, default: Any = None, *, required: bool = False,
                 positive: bool = True, max_s: Decimal = MAX_DURATION_S) -> Any:
        """Seconds as float; ``positive`` rejects 0 (a zero timeout is never meant)."""

        def fn(node: YNode) -> float:
            if not isinstance(node, YScalar):
                raise ValueError(f"must be a duration like 30s, got {_type_name(node)}")
            seconds = parse_duration_decimal(node.value)
            if positive and seconds <= 0:
                raise ValueError("must be greater than 0 (a duration like 500ms, 5s, 1m)")
            if seconds > max_s:
                raise ValueError(f"must be at most {format_duration(max_s)}")
            return float(seconds)

        return self.convert(key, default, fn, required=required)

    def file_path(self, key: str, default: Path | None) -> Any:
        def fn(node: YNode) -> Path:
            if not isinstance(node, YScalar) or not isinstance(node.value, str) or not node.value:
                raise ValueError(f"must be a path, got {_type_name(node)}")
            if "\x00" in node.value:
                raise ValueError("path contains a NUL byte")
            return resolve_path(node.value, self.base_dir)

        return self.convert(key, default, fn)

    # -- lists ---------------------------------------------------------------------------

    def list(self, key: str, item: Callable[[YNode], Any], *, required: bool = False,
             non_empty: bool = False) -> Any:
        node, fallback = self._get(key, (), required)
        if node is None:
            return fallback
        if not isinstance(node, YSeq):
            return self.error(key, f"must be a list, got {_type_name(node)}")
        if non_empty and not node.items:
            return self.error(key, "must not be empty")
        out, ok, seen = [], True, set()
        for i, child in enumerate(node.items):
            child_path = f"{self.key_path(key)}[{i}]"
            try:
                value = item(child)
            except (UnitError, ValueError) as exc:
                self.ctx.error(child.mark, child_path, str(exc))
                ok = False
                continue
            if value in seen:
                self.ctx.error(child.mark, child_path, f"duplicate entry {value!r}")
                ok = False
                continue
            seen.add(value)
            out.append(value)
        return tuple(out) if ok else INVALID


def resolve_path(text: str, base_dir: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


def item_str(node: YNode) -> str:
    if not isinstance(node, YScalar) or not isinstance(node.value, str) or not node.value:
        raise ValueError(f"must be a non-empty string, got {_type_name(node)}")
    return node.value


def item_product(node: YNode) -> str:
    """Product ids are strings; Vertex/Nado ids written as YAML ints become ``"2"``."""
    value = node.value if isinstance(node, YScalar) else None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise ValueError(f"must be a product id (string, or integer for Vertex/Nado), got {_type_name(node)}")
    if isinstance(value, int) and value < 0:
        raise ValueError("product ids are not negative")
    return str(value)


def item_int_product(node: YNode) -> int:
    value = node.value if isinstance(node, YScalar) else None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a non-negative integer product id, got {_type_name(node)}")
    return value


def item_side(node: YNode) -> Side:
    value = node.value if isinstance(node, YScalar) else None
    if value not in ("buy", "sell"):
        raise ValueError("must be buy or sell")
    return Side(value)


# --------------------------------------------------------------------------------------
# Daemon
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_dir: Path = Path("/var/lib/killswitch")
    audit_log: Path = Path("/var/lib/killswitch/audit.jsonl")
    control_socket: Path = Path("/run/killswitch/control.sock")
    control_socket_group: str | None = None
    dry_run: bool = False
    tick_interval_s: float = 0.1
    repoll_interval_s: float = 2.0
    cancel_deadline_s: float = 10.0
    startup_timeout_s: float = 30.0
    cancel_on_shutdown: bool = False
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log_format: str = "auto"  # auto | json | console


def _parse_daemon(r: MapReader) -> DaemonConfig:
    d = DaemonConfig()
    state_dir = r.file_path("state_dir", d.state_dir)
    audit_default = state_dir / "audit.jsonl" if isinstance(state_dir, Path) else d.audit_log
    metrics = MetricsConfig()
    m = r.sub("metrics")
    if m is not None:
        metrics = MetricsConfig(
            enabled=m.bool("enabled", False),
            host=m.str("host", "127.0.0.1"),
            port=m.int("port", 9464, min_value=1, max_value=65535),
        )
        m.finish()
    cfg = DaemonConfig(
        state_dir=state_dir,
        audit_log=r.file_path("audit_log", audit_default),
        control_socket=r.file_path("control_socket", d.control_socket),
        control_socket_group=r.str("control_socket_group", None, pattern=GROUP_RE,
                                   hint="must be a group name"),
        dry_run=r.bool("dry_run", False),
        tick_interval_s=r.duration("tick_interval", d.tick_interval_s, max_s=Decimal(60)),
        repoll_interval_s=r.duration("repoll_interval", d.repoll_interval_s),
        cancel_deadline_s=r.duration("cancel_deadline", d.cancel_deadline_s),
        startup_timeout_s=r.duration("startup_timeout", d.startup_timeout_s),
        cancel_on_shutdown=r.bool("cancel_on_shutdown", False),
        metrics=metrics,
        log_format=r.str("log_format", "auto", choices=("auto", "json", "console")),
    )
    r.finish()
    return cfg


# --------------------------------------------------------------------------------------
# Venues
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretSite:
    """Where a secret reference was written (for ``check_secrets`` messages)."""

    venue: str
    ref: SecretRef
    mark: Mark
    key_path: str


def _parse_secret(r: MapReader, key: str) -> Any:
    node = r.raw(key)
    if node is None:
        return r.ctx.error(r.node.mark, r.key_path(key), "required key is missing (a secret reference)")
    if isinstance(node, YScalar) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        # Never echo the value: it may be the secret itself.
        return r.error(key, LITERAL_SECRET)
    if not isinstance(node, YMap) or len(node.entries) != 1:
        return r.error(key, "must be a secret reference: {env: NAME}, {file: PATH} or {credential: NAME}")
    (kind, (kmark, value)), = node.entries.items()
    path = f"{r.key_path(key)}.{kind}"
    if kind not in ("env", "file", "credential"):
        return r.ctx.error(kmark, path, "secret references are {env: NAME}, {file: PATH} or {credential: NAME}")
    if not isinstance(value, YScalar) or not isinstance(value.value, str) or not value.value:
        return r.ctx.error(value.mark, path, "must be a non-empty string")
    name = value.value
    if kind == "env" and not ENV_NAME_RE.fullmatch(name):
        return r.ctx.error(value.mark, path, "must be an environment variable name")
    if kind == "credential" and ("/" in name or name in (".", "..")):
        return r.ctx.error(value.mark, path, "must be a plain credential name (no '/')")
    if kind == "file":
        if "\x00" in name:
            return r.ctx.error(value.mark, path, "path contains a NUL byte")
        name = str(resolve_path(name, r.base_dir)) if not name.startswith("~") else name
    return SecretRef(kind, name)


def _check_url(value: str, field_name: str) -> str:
    schemes = ("ws://", "wss://") if field_name.endswith("ws_url") else ("http://", "https://")
    if not value.startswith(schemes) or len(value) <= len(schemes[1]):
        raise ValueError(f"must be a URL starting with {' or '.join(schemes)}")
    return value


def _venue_field(r: MapReader, f: dataclasses.Field, default: Any, sites: list[SecretSite], venue: str) -> Any:
    name, ftype = f.name, f.type
    key = name[:-2] if name.endswith("_s") else name
    if ftype == "SecretRef":
        ref = _parse_secret(r, key)
        if isinstance(ref, SecretRef):
            sites.append(SecretSite(venue, ref, r.mark_of(key), r.key_path(key)))
        return ref
    if ftype == "float" and name.endswith("_s"):
        max_s = Decimal(100) if name == "recv_window_s" else MAX_DURATION_S
        return r.duration(key, default, max_s=max_s)
    if ftype == "str":
        if name == "equity_currency":
            # What the OX.FUN session can compute (venues/oxfun/equity.py CONVERSION_MARKETS).
            return r.str(key, default, choices=("OX", "USD", "USDT"))
        value = r.str(key, default)
        if isinstance(value, str) and name.endswith("_url") and r.has(key):
            try:
                _check_url(value, name)
            except ValueError as exc:
                return r.error(key, str(exc))
        if name == "endpoint_address" and isinstance(value, str) and not ADDRESS_RE.fullmatch(value):
            return r.error(key, "must be a 0x-prefixed 20-byte hex address")
        if name == "subaccount_name" and isinstance(value, str) and len(value.encode()) > 12:
            return r.error(key, "must be at most 12 bytes")
        return value
    if ftype == "str | None":
        value = r.str(key, default)
        if isinstance(value, str) and name.endswith("address") and not ADDRESS_RE.fullmatch(value):
            return r.error(key, "must be a 0x-prefixed 20-byte hex address")
        return value
    if ftype == "bool":
        return r.bool(key, default)
    if ftype == "int":
        if name == "chain_id":
            return r.int(key, default, min_value=1)
        return r.int(key, default, min_value=0)
    if ftype == "tuple[str, ...]":
        return r.list(key, item_str)
    if ftype == "tuple[int, ...]":
        return r.list(key, item_int_product)
    if ftype == "BackoffConfig":
        b = r.sub(key)
        if b is None:
            return BackoffConfig()
        d = BackoffConfig()
        initial = b.duration("initial", d.initial_s)
        maximum = b.duration("max", d.max_s)
        multiplier = b.decimal("multiplier", Decimal(str(d.multiplier)), min_value=Decimal(1),
                               max_value=Decimal(100))
        jitter = b.decimal("jitter", Decimal(str(d.jitter)), min_value=Decimal(0), max_value=Decimal("0.99"))
        b.finish()
        if isinstance(initial, float) and isinstance(maximum, float) and maximum < initial:
            return b.error("max", "must be at least backoff.initial")
        if isinstance(multiplier, _Invalid) or isinstance(jitter, _Invalid):
            return INVALID
        return BackoffConfig(initial, maximum, float(multiplier), float(jitter))
    return r.error(key, f"internal: unsupported field type {ftype}")  # pragma: no cover


def _parse_venue(r: MapReader, sites: list[SecretSite]) -> OxfunConfig | VertexConfig | None:
    name = r.str("name", required=True, pattern=VENUE_NAME_RE,
                 hint="venue names are lower-case letters, digits, '_' and '-' (e.g. ox-main)")
    kind = r.str("kind", required=True, choices=tuple(VENUE_CLASSES))
    if not isinstance(kind, str):
        for key in r.node.entries:
            r.raw(key)  # unknown keys cannot be judged without a kind
        return None
    cls = VENUE_CLASSES[kind]
    values: dict[str, Any] = {"name": name, "kind": kind}
    for f in dataclasses.fields(cls):
        if f.name in ("name", "kind"):
            continue
        if kind == "vertex" and f.name in VERTEX_DEFAULTS:
            default = VERTEX_DEFAULTS[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = None
        values[f.name] = _venue_field(r, f, default, sites, name if isinstance(name, str) else "?")
    r.finish()
    if any(isinstance(v, _Invalid) for v in values.values()):
        return None
    return cls(**values)


def venue_products(venue: OxfunConfig | VertexConfig) -> tuple[str, ...]:
    """Products the venue entry watches, as strings (empty = not restricted)."""
    if isinstance(venue, OxfunConfig):
        return venue.markets
    return tuple(str(p) for p in venue.products)


def venue_equity_currency(venue: OxfunConfig | VertexConfig) -> str:
    return venue.equity_currency if isinstance(venue, OxfunConfig) else "USD"


# --------------------------------------------------------------------------------------
# Rules: the common part (each kind adds its own keys in killswitch/rules/<kind>.py)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """What a breach cancels, before restriction to the rule's venues."""

    kind: str = "cancel_all"  # cancel_all | cancel_products | cancel_orders
    products: tuple[str, ...] | None = None
    sides: tuple[Side, ...] | None = None

    def describe(self) -> str:
        if self.kind == "cancel_all":
            return "cancel all orders"
        what = f"products {', '.join(self.products)}" if self.products else "all products"
        if self.kind == "cancel_products":
            return f"cancel {what}"
        sides = f", sides {'/'.join(s.value for s in self.sides)}" if self.sides else ""
        return f"cancel orders by id ({what}{sides})"


@dataclass(frozen=True, kw_only=True)
class RuleConfig:
    """Keys every rule has. Subclasses (one per kind) are frozen and kw_only."""

    name: str
    kind: str
    venues: tuple[str, ...] = ()  # empty = every configured venue
    latch: bool = True  # False: alert only, never cancels
    action: Action = Action()
    keep_protective_stops: bool = False

    @property
    def action_scope(self) -> CancelScope:
        return CancelScope(
            venues=frozenset(self.venues) if self.venues else None,
            products=frozenset(self.action.products) if self.action.products else None,
            sides=frozenset(self.action.sides) if self.action.sides else None,
            keep_protective_stops=self.keep_protective_stops,
            by_id_only=self.action.kind == "cancel_orders",
        )

    def covers_venue(self, venue: str) -> bool:
        return not self.venues or venue in self.venues

    def breach(self, observed: str, threshold: str, detail: str = "") -> Breach:
        return Breach(rule=self.name, kind=self.kind, observed=observed, threshold=threshold,
                      scope=self.action_scope, latch=self.latch, detail=detail)

    def describe(self) -> str:
        """What triggers the rule, in words (overridden per kind)."""
        return self.kind


def _parse_action(r: MapReader) -> Any:
    node = r.raw("action")
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return Action()
    hint = "must be cancel_all, {cancel_products: [...]} or {cancel_orders: {products: [...], sides: [...]}}"
    if isinstance(node, YScalar):
        if node.value == "cancel_all":
            return Action()
        return r.error("action", hint)
    if not isinstance(node, YMap) or len(node.entries) != 1:
        return r.error("action", hint)
    a = MapReader(r.ctx, node, r.key_path("action"), r.base_dir)
    if a.has("cancel_products"):
        products = a.list("cancel_products", item_product, non_empty=True)
        a.finish()
        return INVALID if isinstance(products, _Invalid) else Action("cancel_products", products)
    if a.has("cancel_orders"):
        node_co = a.raw("cancel_orders")
        if isinstance(node_co, YScalar) and node_co.value is None:
            return Action("cancel_orders")
        co = a.sub("cancel_orders")
        a.finish()
        if co is None:
            return INVALID
        products = co.list("products", item_product)
        sides = co.list("sides", item_side)
        co.finish()
        if isinstance(products, _Invalid) or isinstance(sides, _Invalid):
            return INVALID
        return Action("cancel_orders", products or None, sides or None)
    a.finish()
    return INVALID


# --------------------------------------------------------------------------------------
# The whole file (with includes)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    source: Path
    daemon: DaemonConfig
    venues: tuple[OxfunConfig | VertexConfig, ...]
    rules: tuple[RuleConfig, ...]
    # Strategy heartbeat sources backed by a file whose mtime the daemon watches.
    heartbeat_files: dict[str, Path] = field(default_factory=dict)
    warnings: tuple[ConfigIssue, ...] = ()
    secret_sites: tuple[SecretSite, ...] = field(default=(), repr=False, compare=False)

    def venue(self, name: str) -> OxfunConfig | VertexConfig:
        for v in self.venues:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def manual_rule(self) -> RuleConfig | None:
        return next((r for r in self.rules if r.kind == "manual"), None)


@dataclass
class _Collected:
    """Mutable accumulator for one load (never escapes this module)."""

    root_display: str
    daemon: DaemonConfig | None = None
    venues: list[tuple[OxfunConfig | VertexConfig, Mark, str]] = field(default_factory=list)
    # Names as written, valid entry or not, so duplicates and references are always checked.
    venue_names: list[tuple[str, Mark, str]] = field(default_factory=list)
    rule_nodes: list[tuple[MapReader, str]] = field(default_factory=list)
    rules: list[tuple[RuleConfig, MapReader, str]] = field(default_factory=list)
    sites: list[SecretSite] = field(default_factory=list)


TOP_KEYS = ("daemon", "venues", "rules", "include")


def _load_file(ctx: Ctx, acc: _Collected, text: str, display: str, real: Path | None, base_dir: Path,
               stack: tuple[Path, ...], is_root: bool) -> None:
    n_issues = len(ctx.issues)
    root = parse_yaml(text, display, ctx.issues)
    if root is None:
        if len(ctx.issues) == n_issues:
            ctx.error(Mark(display, 1, 1), "", "configuration file is empty")
        return
    if not isinstance(root, YMap):
        ctx.error(root.mark, "", f"the top level must be a mapping with keys {', '.join(TOP_KEYS)}")
        return
    top = MapReader(ctx, root, "", base_dir)
    if top.has("daemon"):
        if is_root:
            d = top.sub("daemon")
            acc.daemon = _parse_daemon(d) if d is not None else None
        else:
            top.raw("daemon")
            top.error("daemon", "daemon settings belong in the main file, not in an included file")

    node = top.raw("venues")
    if node is not None and not (isinstance(node, YScalar) and node.value is None):
        if not isinstance(node, YSeq):
            top.error("venues", f"must be a list of venue mappings, got {_type_name(node)}")
        else:
            for i, item in enumerate(node.items):
                path = f"venues[{i}]"
                if not isinstance(item, YMap):
                    ctx.error(item.mark, path, f"must be a mapping, got {_type_name(item)}")
                    continue
                name_entry = item.entries.get("name")
                if name_entry is not None and isinstance(getattr(name_entry[1], "value", None), str):
                    acc.venue_names.append((name_entry[1].value, name_entry[1].mark, f"{path}.name"))
                v = _parse_venue(MapReader(ctx, item, path, base_dir), acc.sites)
                if v is not None:
                    acc.venues.append((v, item.mark, path))

    node = top.raw("rules")
    if node is not None and not (isinstance(node, YScalar) and node.value is None):
        if not isinstance(node, YSeq):
            top.error("rules", f"must be a list of rule mappings, got {_type_name(node)}")
        else:
            for i, item in enumerate(node.items):
                path = f"rules[{i}]"
                if not isinstance(item, YMap):
                    ctx.error(item.mark, path, f"must be a mapping, got {_type_name(item)}")
                    continue
                r = MapReader(ctx, item, path, base_dir)
                rule = _parse_rule(r)
                acc.rule_nodes.append((r, path))
                if rule is not None:
                    acc.rules.append((rule, r, path))

    includes = top.list("include", item_str)
    top.finish()
    if isinstance(includes, tuple) and includes:
        inc_node = root.entries["include"][1]
        for i, rel in enumerate(includes):
            mark = inc_node.items[i].mark
            _include(ctx, acc, rel, mark, f"include[{i}]", real, base_dir, display, stack)


def _include(ctx: Ctx, acc: _Collected, rel: str, mark: Mark, path: str, real: Path | None,
             base_dir: Path, display: str, stack: tuple[Path, ...]) -> None:
    if "\x00" in rel or Path(rel).is_absolute() or rel.startswith("~"):
        ctx.error(mark, path, "include paths must be relative to the including file")
        return
    try:
        target = (base_dir / rel).resolve()
        allowed = base_dir.resolve()
    except (OSError, RuntimeError) as exc:
        ctx.error(mark, path, f"cannot resolve include: {type(exc).__name__}")
        return
    if not target.is_relative_to(allowed):
        ctx.error(mark, path, "include escapes the including file's directory")
        return
    if target in stack:
        ctx.error(mark, path, f"include cycle: {' -> '.join(p.name for p in stack)} -> {target.name}")
        return
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        ctx.error(mark, path, f"cannot read included file {rel!r}: {type(exc).__name__}")
        return
    sub_display = os.path.normpath(os.path.join(os.path.dirname(display), rel))
    _load_file(ctx, acc, text, sub_display, target, target.parent, stack + (target,), is_root=False)


def _parse_rule(r: MapReader) -> RuleConfig | None:
    from killswitch.rules.registry import RULE_KINDS  # rules import this module

    name = r.str("name", required=True, pattern=RULE_NAME_RE,
                 hint="rule names are letters, digits, '_', '-', '.', ':'")
    kind = r.str("kind", required=True)
    if isinstance(kind, str) and kind not in RULE_KINDS:
        kind = r.error("kind", f"unknown rule kind {kind!r}; known kinds: {', '.join(sorted(RULE_KINDS))}")
    common = {
        "name": name,
        "kind": kind,
        "venues": r.list("venues", item_str),
        "latch": r.bool("latch", True),
        "action": _parse_action(r),
        "keep_protective_stops": r.bool("keep_protective_stops", False),
    }
    if not isinstance(kind, str):
        for key in r.node.entries:
            r.raw(key)
        return None
    rule = RULE_KINDS[kind].parse(r, common)
    r.finish()
    if rule is None or any(isinstance(getattr(rule, f.name), _Invalid) for f in dataclasses.fields(rule)):
        return None
    return rule


def _cross_check(ctx: Ctx, acc: _Collected) -> dict[str, Path]:
    venues = {v.name: v for v, _, _ in acc.venues}
    seen_venues: dict[str, Mark] = {}
    for name, mark, path in acc.venue_names:
        if name in seen_venues:
            ctx.error(mark, path, f"duplicate venue name {name!r} (first at {seen_venues[name].file}:"
                                  f"{seen_venues[name].line})")
        seen_venues.setdefault(name, mark)
    if not acc.venue_names and not ctx.issues:
        ctx.error(Mark(acc.root_display, 1, 1), "venues", "no venues configured")

    seen_rules: dict[str, Mark] = {}
    manual_seen = False
    for r, path in acc.rule_nodes:
        name_node = r.node.entries.get("name", (None, None))[1]
        name = getattr(name_node, "value", None)
        if isinstance(name, str):
            if name in seen_rules:
                ctx.error(name_node.mark, f"{path}.name", f"duplicate rule name {name!r} (first at "
                                                         f"{seen_rules[name].file}:{seen_rules[name].line})")
            seen_rules.setdefault(name, name_node.mark)
        kind_node = r.node.entries.get("kind", (None, None))[1]
        if getattr(kind_node, "value", None) == "manual":
            if manual_seen:
                ctx.error(kind_node.mark, f"{path}.kind", "at most one manual rule is allowed")
            manual_seen = True
        venues_node = r.node.entries.get("venues", (None, None))[1]
        for i, item in enumerate(getattr(venues_node, "items", ())):
            vname = getattr(item, "value", None)
            if isinstance(vname, str) and vname not in seen_venues:
                ctx.error(item.mark, f"{path}.venues[{i}]", f"unknown venue {vname!r}")

    heartbeat_files: dict[str, Path] = {}
    heartbeat_marks: dict[str, Mark] = {}
    for rule, r, path in acc.rules:
        covered = [venues[n] for n in (rule.venues or tuple(venues)) if n in venues]
        _check_products(ctx, r, path, rule, covered)
        extra = getattr(rule, "cross_check", None)
        if extra is not None:
            extra(ctx, r, venues, covered)
        hb_file = getattr(rule, "heartbeat_file", None)
        if hb_file is not None:
            src = rule.source_name  # type: ignore[attr-defined]
            if src in heartbeat_files and heartbeat_files[src] != hb_file:
                ctx.error(r.mark_of("source"), f"{path}.source.file",
                          f"strategy {src!r} already watches {heartbeat_files[src]} "
                          f"(line {heartbeat_marks[src].line})")
            heartbeat_files[src] = hb_file
            heartbeat_marks[src] = r.mark_of("source")
    return heartbeat_files


def _check_products(ctx: Ctx, r: MapReader, path: str, rule: RuleConfig, covered: list) -> None:
    """Warn when an action names products none of the rule's venues watches; only when
    every covered venue lists its products (otherwise any product may be legitimate)."""
    if not rule.action.products or not covered:
        return
    lists = [venue_products(v) for v in covered]
    if not all(lists):
        return
    known = set().union(*lists)
    for product in rule.action.products:
        if product not in known:
            ctx.warn(r.mark_of("action"), f"{path}.action",
                     f"product {product!r} is not watched by venue(s) {', '.join(v.name for v in covered)}")


def _load(text: str, display: str, real: Path | None, base_dir: Path, source: Path) -> Config:
    ctx = Ctx()
    acc = _Collected(display)
    stack = (real.resolve(),) if real is not None else ()
    _load_file(ctx, acc, text, display, real, base_dir, stack, is_root=True)
    heartbeat_files = _cross_check(ctx, acc)
    if ctx.issues:
        # Reading order: by file (as first met), then position.
        files = {i.file: n for n, i in reversed(list(enumerate(ctx.issues)))}
        raise ConfigError(sorted(ctx.issues, key=lambda i: (files[i.file], i.line, i.column)))
    return Config(
        source=source,
        daemon=acc.daemon if acc.daemon is not None else _default_daemon(),
        venues=tuple(v for v, _, _ in acc.venues),
        rules=tuple(r for r, _, _ in acc.rules),
        heartbeat_files=heartbeat_files,
        warnings=tuple(ctx.warnings),
        secret_sites=tuple(acc.sites),
    )


def _default_daemon() -> DaemonConfig:
    return DaemonConfig()


def load_config(path: str | Path) -> Config:
    """Load and validate a configuration file (raises :class:`ConfigError`)."""
    p = Path(path)
    display = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(display, 1, 1, "", f"cannot read config file: {type(exc).__name__}")]) from None
    base_dir = p.parent.resolve() if p.parent != Path("") else Path.cwd()
    return _load(text, display, p, base_dir, p.resolve())


def load_config_text(text: str, filename: str = "<string>") -> Config:
    """Validate configuration text; relative paths resolve against ``filename``'s directory
    (the current directory for ``<string>``). Only :class:`ConfigError` escapes."""
    if filename.startswith("<"):
        base_dir, real = Path.cwd(), None
    else:
        base_dir, real = Path(filename).resolve().parent, Path(filename)
    return _load(text, filename, real, base_dir, (base_dir / Path(filename).name) if real else Path(filename))


# --------------------------------------------------------------------------------------
# Uses of a loaded Config
# --------------------------------------------------------------------------------------


def build_rules(config: Config) -> list:
    """Instantiate one rule object per rule entry (manual included: it never breaches)."""
    from killswitch.rules.registry import RULE_KINDS

    return [RULE_KINDS[rule.kind].rule_class(rule) for rule in config.rules]


def check_secrets(config: Config, environ: Mapping[str, str] | None = None, *,
                  strict_env: bool = False) -> list[ConfigIssue]:
    """Try every secret reference without keeping any value.

    Files (and systemd credentials that exist) must be private (no group/other bits): that
    is always an error. A missing environment variable or ``$CREDENTIALS_DIRECTORY`` is a
    warning unless ``strict_env`` (``killswitch check`` may run outside the service's
    environment)."""
    env = os.environ if environ is None else environ
    issues: list[ConfigIssue] = []
    for site in config.secret_sites:
        try:
            resolve_secret(site.ref, env)
        except SecretError as exc:
            environmental = site.ref.kind == "env" or (
                site.ref.kind == "credential" and not env.get("CREDENTIALS_DIRECTORY")
            )
            severity = "warning" if environmental and not strict_env else "error"
            issues.append(ConfigIssue(site.mark.file, site.mark.line, site.mark.column, site.key_path,
                                      str(exc), severity))
    return issues


def _describe_venue(v: OxfunConfig | VertexConfig) -> list[str]:
    if isinstance(v, OxfunConfig):
        lines = [
            f"  {v.name} (oxfun)",
            f"    ws {v.ws_url}  rest {v.rest_url}",
            f"    markets: {', '.join(v.markets) if v.markets else 'all with orders/positions'}",
            f"    equity in {v.equity_currency}; ping every {format_duration(v.ping_interval_s)}",
            f"    secrets: api_key {v.api_key.describe()}, api_secret {v.api_secret.describe()}",
        ]
    else:
        lines = [
            f"  {v.name} ({v.kind}) chain {v.chain_id}, endpoint {v.endpoint_address}",
            f"    gateway {v.gateway_rest_url}  ws {v.gateway_ws_url}",
            f"    subscribe {v.subscribe_ws_url}  trigger {v.trigger_url}",
            f"    subaccount {v.subaccount_name!r}"
            + (f" of wallet {v.wallet_address}" if v.wallet_address else "")
            + f"; products: {', '.join(map(str, v.products)) if v.products else 'all'}",
            f"    recv_window {format_duration(v.recv_window_s)}; secrets: private_key {v.private_key.describe()}",
        ]
    return lines


def summarize(config: Config) -> str:
    d = config.daemon
    out = [f"config: {config.source}", "", f"venues ({len(config.venues)}):"]
    for v in config.venues:
        out.extend(_describe_venue(v))
    out += ["", f"rules ({len(config.rules)}):"]
    for rule in config.rules:
        mode = "LATCH (cancels)" if rule.latch else "ALERT ONLY (no cancel)"
        where = ", ".join(rule.venues) if rule.venues else "all venues"
        stops = "; keeps protective stops" if rule.keep_protective_stops else ""
        out.append(f"  {rule.name} [{rule.kind}] on {where}: {rule.describe()}")
        out.append(f"    -> {mode}: {rule.action.describe()}{stops}")
    if config.manual_rule is None:
        out.append("  (no manual rule: `killswitch trip` / SIGUSR1 cancel everything)")
    if config.heartbeat_files:
        out += ["", "heartbeat files:"]
        out += [f"  {src}: {path}" for src, path in sorted(config.heartbeat_files.items())]
    metrics = f"{d.metrics.host}:{d.metrics.port}" if d.metrics.enabled else "off"
    out += [
        "",
        "daemon:",
        f"  state_dir {d.state_dir}; audit_log {d.audit_log}",
        f"  control_socket {d.control_socket}"
        + (f" (group {d.control_socket_group})" if d.control_socket_group else ""),
        f"  dry_run {'YES (no cancel is sent)' if d.dry_run else 'no'}; cancel_on_shutdown "
        f"{'yes' if d.cancel_on_shutdown else 'no'}",
        f"  tick {format_duration(d.tick_interval_s)}, repoll {format_duration(d.repoll_interval_s)}, "
        f"cancel_deadline {format_duration(d.cancel_deadline_s)}, "
        f"startup_timeout {format_duration(d.startup_timeout_s)}",
        f"  metrics {metrics}; log_format {d.log_format}",
    ]
    if config.warnings:
        out += ["", "warnings:"] + [f"  {w}" for w in config.warnings]
    return "\n".join(out)


# Re-exported for rule modules (parsing their own keys).
__all__ += ["parse_amount", "parse_percent", "Amount", "UnitError", "YMap", "YScalar", "YSeq", "Mark", "Ctx",
            "INVALID", "item_product", "item_str", "venue_products", "venue_equity_currency"]
