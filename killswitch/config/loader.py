"""YAML configuration -> frozen dataclasses, strictly validated.

The document is parsed into located nodes (:mod:`killswitch.schema.nodes`) and validated by
walking them while collecting issues; nothing is built until the walk is clean, then
:class:`ConfigError` carries every issue at once, or a :class:`Config` is returned.
Rule kinds plug in through :mod:`killswitch.rules.registry`; each parses its own keys with
:class:`~killswitch.schema.reader.MapReader` and returns a subclass of
:class:`~killswitch.schema.rule.RuleConfig`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping


from killswitch.config.reading import DEFAULT_MAX_CONFIG_BYTES, ConfigReadError, read_config_text
from killswitch.secrets import SecretRef
from killswitch.fleet.config import FleetConfig, parse_fleet
from killswitch.venues.base import BackoffConfig, HyperliquidConfig, OxfunConfig, VertexConfig

from killswitch.schema.nodes import ConfigError, ConfigIssue, Mark, YMap, YNode, YScalar, YSeq, parse_yaml
from killswitch.schema.reader import (
    INVALID,
    MAX_DURATION_S,
    Ctx,
    Invalid,
    MapReader,
    item_int_product,
    item_str,
    resolve_path,
    type_name,
)
from killswitch.schema.rule import RuleConfig, parse_action, venue_products
from killswitch.schema.suggest import did_you_mean


LITERAL_SECRET = "literal secret in config; use {env: ...}, {file: ...} or {credential: ...}"
VENUE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
RULE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


VERTEX_DEFAULTS: Mapping[str, Any] = {
    "chain_id": 42161,
    "endpoint_address": "0xbbEE07B3e8121227AfCFe1E2B82772246226128e",
    "gateway_ws_url": "wss://gateway.prod.vertexprotocol.com/v1/ws",
    "subscribe_ws_url": "wss://gateway.prod.vertexprotocol.com/v1/subscribe",
    "gateway_rest_url": "https://gateway.prod.vertexprotocol.com/v1",
    "trigger_url": "https://trigger.prod.vertexprotocol.com/v1",
}
VENUE_CLASSES: Mapping[str, type] = {"oxfun": OxfunConfig, "vertex": VertexConfig, "nado": VertexConfig,
                                     "hyperliquid": HyperliquidConfig}


# Daemon


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True, slots=True)
class Grant:
    """Principals named for one control-socket role (names as written; resolved to ids by
    :func:`killswitch.control.access.resolve_access` at start-up and on reload)."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.users or self.groups)


@dataclass(frozen=True, slots=True)
class ControlGrants:
    """``daemon.control``: who holds each role (see docs/operations.md "Control socket roles")."""

    operators: Grant = Grant()
    heartbeat: Grant = Grant()
    trip: Grant = Grant()
    idle_timeout_s: float = 5.0

    def any(self) -> bool:
        return bool(self.operators or self.heartbeat or self.trip)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_dir: Path = Path("/var/lib/killswitch")
    audit_log: Path = Path("/var/lib/killswitch/audit.jsonl")
    control_socket: Path = Path("/run/killswitch/control.sock")
    control_socket_group: str | None = None
    control: ControlGrants = ControlGrants()
    dry_run: bool = False
    tick_interval_s: float = 0.1
    repoll_interval_s: float = 2.0
    cancel_deadline_s: float = 10.0
    startup_timeout_s: float = 30.0
    cancel_on_shutdown: bool = False
    # Largest |amount| an operator may declare as a cash flow (besides the venue's equity).
    max_cash_flow: Decimal | None = None
    # A venue refusing the credentials at start-up: False keeps guarding the others (READY,
    # STATUS=degraded, alarm, retried); True makes it fatal (exit 3).
    require_all_venues: bool = False
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log_format: str = "auto"  # auto | json | console


USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\$?")


def _parse_grant(c: MapReader, key: str) -> Any:
    g = c.sub(key)
    if g is None:
        return Grant()
    users = g.list("users", lambda n: _item_name(n, USER_RE, "a user name"))
    groups = g.list("groups", lambda n: _item_name(n, GROUP_RE, "a group name"))
    g.finish()
    if isinstance(users, Invalid) or isinstance(groups, Invalid):
        return INVALID
    return Grant(tuple(users or ()), tuple(groups or ()))


def _item_name(node: YNode, pattern: re.Pattern, what: str) -> str:
    value = item_str(node)
    if not pattern.fullmatch(value):
        raise ValueError(f"must be {what}")
    return value


def _parse_control(r: MapReader) -> Any:
    c = r.sub("control")
    if c is None:
        return ControlGrants()
    grants = {key: _parse_grant(c, key) for key in ("operators", "heartbeat", "trip")}
    idle = c.duration("idle_timeout", 5.0, max_s=Decimal(300))
    c.finish()
    if any(isinstance(v, Invalid) for v in grants.values()) or isinstance(idle, Invalid):
        return INVALID
    return ControlGrants(**grants, idle_timeout_s=idle)


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
    control = _parse_control(r)
    if r.has("control_socket_group") and not r.has("control"):
        r.ctx.warn(r.mark_of("control_socket_group"), r.key_path("control_socket_group"),
                   "every member holds the operator role (trip, reset, cash flows); give a strategy "
                   "only heartbeats with daemon.control: {heartbeat: {users: [...]}} "
                   "(docs/operations.md, Control socket roles)")
    cfg = DaemonConfig(
        state_dir=state_dir,
        audit_log=r.file_path("audit_log", audit_default),
        control_socket=r.file_path("control_socket", d.control_socket),
        control_socket_group=r.str("control_socket_group", None, pattern=GROUP_RE,
                                   hint="must be a group name"),
        control=control,
        dry_run=r.bool("dry_run", False),
        tick_interval_s=r.duration("tick_interval", d.tick_interval_s, max_s=Decimal(60)),
        repoll_interval_s=r.duration("repoll_interval", d.repoll_interval_s),
        cancel_deadline_s=r.duration("cancel_deadline", d.cancel_deadline_s),
        startup_timeout_s=r.duration("startup_timeout", d.startup_timeout_s),
        cancel_on_shutdown=r.bool("cancel_on_shutdown", False),
        max_cash_flow=r.decimal("max_cash_flow", None, positive=True),
        require_all_venues=r.bool("require_all_venues", False),
        metrics=metrics,
        log_format=r.str("log_format", "auto", choices=("auto", "json", "console")),
    )
    r.finish()
    return cfg



# Venues


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


parse_secret_ref = _parse_secret  # for the fleet operator's reader of a fleet: section


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
    if ftype == "SecretRef | None":
        if not r.has(key):
            return None
        ref = _parse_secret(r, key)
        if isinstance(ref, SecretRef):
            sites.append(SecretSite(venue, ref, r.mark_of(key), r.key_path(key)))
        return ref
    if ftype == "float" and name.endswith("_s"):
        max_s = Decimal(100) if name == "recv_window_s" else MAX_DURATION_S
        value = r.duration(key, default, max_s=max_s, positive=name != "dms_after_s")
        if name == "dms_after_s" and isinstance(value, float) and 0 < value < 6:
            # Hyperliquid refuses a scheduleCancel less than 5 s ahead; refreshed every third.
            return r.error(key, "must be 0 (off) or at least 6s (the venue's minimum is 5 s ahead)")
        return value
    if ftype == "str":
        if name == "equity_currency":
            # What the OX.FUN session can compute (venues/oxfun/equity.py CONVERSION_MARKETS).
            return r.str(key, default, choices=("OX", "USD", "USDT"))
        if name == "network":
            return r.str(key, default, choices=("mainnet", "testnet"))
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
        if name == "strategy_agent_name" and isinstance(value, str) and not 1 <= len(value) <= 16:
            return r.error(key, "must be 1 to 16 characters (the venue's agent name limit)")
        return value
    if ftype == "bool":
        return r.bool(key, default)
    if ftype == "int":
        if name in ("chain_id", "cancel_batch_size"):
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
        if isinstance(multiplier, Invalid) or isinstance(jitter, Invalid):
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
    if any(isinstance(v, Invalid) for v in values.values()):
        return None
    return cls(**values)


# The whole file (with includes)


@dataclass(frozen=True)
class Config:
    source: Path
    daemon: DaemonConfig
    venues: tuple[OxfunConfig | VertexConfig, ...]
    rules: tuple[RuleConfig, ...]
    # Strategy heartbeat sources backed by a file whose mtime the daemon watches.
    heartbeat_files: dict[str, Path] = field(default_factory=dict)
    warnings: tuple[ConfigIssue, ...] = ()
    fleet: FleetConfig | None = None  # optional: see killswitch.fleet
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
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES  # per file, includes too
    daemon: DaemonConfig | None = None
    fleet: FleetConfig | None = None
    venues: list[tuple[OxfunConfig | VertexConfig, Mark, str]] = field(default_factory=list)
    # Names as written, valid entry or not, so duplicates and references are always checked.
    venue_names: list[tuple[str, Mark, str]] = field(default_factory=list)
    rule_nodes: list[tuple[MapReader, str]] = field(default_factory=list)
    rules: list[tuple[RuleConfig, MapReader, str]] = field(default_factory=list)
    sites: list[SecretSite] = field(default_factory=list)


TOP_KEYS = ("daemon", "fleet", "venues", "rules", "include")


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
    if top.has("fleet"):
        if is_root:
            f = top.sub("fleet")

            def fleet_secret(r: MapReader, key: str) -> Any:  # parse, and list it for check_secrets
                ref = _parse_secret(r, key)
                if isinstance(ref, SecretRef):
                    acc.sites.append(SecretSite("fleet", ref, r.mark_of(key), r.key_path(key)))
                return ref

            acc.fleet = parse_fleet(f, fleet_secret) if f is not None else None
        else:
            top.raw("fleet")
            top.error("fleet", "fleet settings belong in the main file, not in an included file")

    node = top.raw("venues")
    if node is not None and not (isinstance(node, YScalar) and node.value is None):
        if not isinstance(node, YSeq):
            top.error("venues", f"must be a list of venue mappings, got {type_name(node)}")
        else:
            for i, item in enumerate(node.items):
                path = f"venues[{i}]"
                if not isinstance(item, YMap):
                    ctx.error(item.mark, path, f"must be a mapping, got {type_name(item)}")
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
            top.error("rules", f"must be a list of rule mappings, got {type_name(node)}")
        else:
            for i, item in enumerate(node.items):
                path = f"rules[{i}]"
                if not isinstance(item, YMap):
                    ctx.error(item.mark, path, f"must be a mapping, got {type_name(item)}")
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
        text = read_config_text(target, acc.max_bytes)
    except ConfigReadError as exc:
        ctx.error(mark, path, f"cannot read included file {rel!r}: {exc}")
        return
    sub_display = os.path.normpath(os.path.join(os.path.dirname(display), rel))
    _load_file(ctx, acc, text, sub_display, target, target.parent, stack + (target,), is_root=False)


def _parse_rule(r: MapReader) -> RuleConfig | None:
    from killswitch.rules.registry import RULE_KINDS  # rules import this module

    name = r.str("name", required=True, pattern=RULE_NAME_RE,
                 hint="rule names are letters, digits, '_', '-', '.', ':'")
    kind = r.str("kind", required=True)
    if isinstance(kind, str) and kind not in RULE_KINDS:
        kind = r.error("kind", f"unknown rule kind {kind!r}{did_you_mean(kind, RULE_KINDS)}; "
                               f"known kinds: {', '.join(sorted(RULE_KINDS))}")
    common = {
        "name": name,
        "kind": kind,
        "venues": r.list("venues", item_str),
        "latch": r.bool("latch", True),
        "fleet": r.bool("fleet", False),
        "action": parse_action(r),
        "keep_protective_stops": r.bool("keep_protective_stops", False),
    }
    if not isinstance(kind, str):
        for key in r.node.entries:
            r.raw(key)
        return None
    rule = RULE_KINDS[kind].parse(r, common)
    r.finish()
    if rule is None or any(isinstance(getattr(rule, f.name), Invalid) for f in dataclasses.fields(rule)):
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
                known = ", ".join(sorted(seen_venues)) or "none"
                ctx.error(item.mark, f"{path}.venues[{i}]",
                          f"unknown venue {vname!r}{did_you_mean(vname, seen_venues)}; configured venues: {known}")

    heartbeat_files: dict[str, Path] = {}
    heartbeat_marks: dict[str, Mark] = {}
    for rule, r, path in acc.rules:
        covered = [venues[n] for n in (rule.venues or tuple(venues)) if n in venues]
        _check_products(ctx, r, path, rule, covered)
        _check_lock(ctx, r, path, rule, covered)
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


def lock_gap(v: OxfunConfig | VertexConfig | HyperliquidConfig) -> str | None:
    """Why ``lock: true`` cannot lock order entry on this venue, or None when it can."""
    if isinstance(v, OxfunConfig):
        return ("OX.FUN cannot lock order entry: its API has no way to revoke or disable an API key "
                "(revoke the strategy's key in the OX.FUN web UI); drop lock: true or the venue from this rule")
    if isinstance(v, VertexConfig) and v.owner_private_key is None:
        return ("locking order entry on Nado replaces the subaccount's linked signer, which needs the "
                "wallet owner's key: set owner_private_key on the venue")
    if isinstance(v, HyperliquidConfig) and (v.master_key is None or not v.strategy_agent_name):
        return ("locking order entry on Hyperliquid deregisters the strategy's agent, which needs "
                "master_key and strategy_agent_name on the venue")
    return None


def _check_lock(ctx: Ctx, r: MapReader, path: str, rule: RuleConfig, covered: list) -> None:
    """A rule asking to lock order entry on a venue that cannot do it is an error: the lock
    would fail only at the trip (alarm lock_failed), when the operator counted on it."""
    if not rule.action.lock:
        return
    for v in covered:
        gap = lock_gap(v)
        if gap is not None:
            ctx.error(r.mark_of("action"), f"{path}.action.lock", f"venue {v.name!r}: {gap}")


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


def _load(text: str, display: str, real: Path | None, base_dir: Path, source: Path,
          max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> Config:
    ctx = Ctx()
    acc = _Collected(display, max_bytes)
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
        fleet=acc.fleet,
        secret_sites=tuple(acc.sites),
    )


def _default_daemon() -> DaemonConfig:
    return DaemonConfig()


def load_config(path: str | Path, *, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> Config:
    """Load and validate a configuration file (raises :class:`ConfigError`); every file read
    (this one and its includes) must be a regular file of at most ``max_bytes``."""
    p = Path(path)
    display = str(path)
    try:
        text = read_config_text(p, max_bytes)
    except ConfigReadError as exc:
        raise ConfigError([ConfigIssue(display, 1, 1, "", f"cannot read config file: {exc}")]) from None
    base_dir = p.parent.resolve() if p.parent != Path("") else Path.cwd()
    return _load(text, display, p, base_dir, p.resolve(), max_bytes)


def load_config_text(text: str, filename: str = "<string>") -> Config:
    """Validate configuration text; relative paths resolve against ``filename``'s directory
    (the current directory for ``<string>``). Only :class:`ConfigError` escapes."""
    if filename.startswith("<"):
        base_dir, real = Path.cwd(), None
    else:
        base_dir, real = Path(filename).resolve().parent, Path(filename)
    return _load(text, filename, real, base_dir, (base_dir / Path(filename).name) if real else Path(filename))


