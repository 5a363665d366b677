"""Uses of a loaded Config: building rule objects, trying secret references, the `check` summary.
"""

from __future__ import annotations

import os
from typing import Mapping


from killswitch.secrets import SecretError, resolve_secret
from killswitch.units import (
    format_duration,
)
from killswitch.venues.base import HyperliquidConfig, OxfunConfig, VertexConfig

from killswitch.config.loader import Config
from killswitch.schema.nodes import ConfigIssue


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
    elif isinstance(v, HyperliquidConfig):
        lines = [
            f"  {v.name} (hyperliquid, {v.network}) account {v.account_address or 'of the key'}",
            f"    rest {v.rest_url}  ws {v.ws_url}; coins: {', '.join(v.coins) if v.coins else 'all'}",
            f"    dead-man's switch: {'off' if not v.dms_after_s else 'scheduleCancel now+' + format_duration(v.dms_after_s)}"
            f"; secrets: private_key {v.private_key.describe()}",
        ]
    else:
        lines = [
            f"  {v.name} ({v.kind}) chain {v.chain_id}, endpoint {v.endpoint_address}",
            f"    gateway {v.gateway_rest_url}  ws {v.gateway_ws_url}",
            f"    subscribe {v.subscribe_ws_url}  trigger {v.trigger_url}",
            f"    subaccount {v.subaccount_name!r}"
            + (f" of wallet {v.wallet_address}" if v.wallet_address else "")
            + f"; products: {', '.join(map(str, v.products)) if v.products else 'all'}",
            f"    recv_window {format_duration(v.recv_window_s)}; secrets: private_key {v.private_key.describe()}"
            + (f", owner_private_key {v.owner_private_key.describe()} (stream authentication)"
               if v.owner_private_key is not None else ""),
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
