"""Human rendering of status and command replies for the CLI (pure: dict in, text out).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

import orjson


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    fmt = indent + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*row).rstrip() for row in rows]


def _s(value: Any, none: str = "-") -> str:
    return none if value is None else str(value)


def _wall(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_status(st: Mapping[str, Any]) -> str:
    """The human view of ``{"op":"status"}`` (the reply minus "ok")."""
    state = str(st.get("state", "?")).upper()
    flags = []
    flags.append("ready" if st.get("ready") else "NOT READY (starting)")
    if st.get("dry_run"):
        flags.append("DRY-RUN: no cancel is sent")
    if st.get("degraded"):
        flags.append(f"degraded: {', '.join(st['degraded'])} not up at start")
    head = f"killswitch: {state}  ({'; '.join(flags)})"
    if st.get("pid"):
        head += f"  pid {st['pid']}"
    out = [head]
    if st.get("reload_errors"):
        out += ["", "RELOAD FAILED, running the previous configuration:"]
        out += [f"  {e}" for e in st["reload_errors"]]
    trips = st.get("trips") or []
    if trips:
        out += ["", f"trips ({len(trips)}):"]
        rows = [[f"#{t.get('trip_id')}", _s(t.get("rule")), _s(t.get("observed")), _s(t.get("threshold")),
                 _s(t.get("source")), _wall(t.get("ts_wall_ms"))] for t in trips]
        out += _table(["TRIP", "RULE", "OBSERVED", "THRESHOLD", "SOURCE", "AT"], rows)
        for t in trips:
            out.append(f"  #{t.get('trip_id')} reason: {t.get('reason')}")
    elif st.get("last_reset"):
        r = st["last_reset"]
        out += ["", f"last reset: by {r.get('operator')} at {_wall(r.get('ts_wall_ms'))}: {r.get('reason')}"]
    venues = st.get("venues") or {}
    out += ["", f"venues ({len(venues)}):"]
    rows = []
    for name, v in venues.items():
        conn = "up" if v.get("connected") else "DOWN"
        if v.get("connected") and not v.get("trusted", True):
            conn = "up (unreconciled)"
        equity = "-" if v.get("equity") is None else f"{v['equity']} {v.get('equity_currency') or ''}".strip()
        rows.append([name, conn, _s(v.get("open_orders")), equity, _s(v.get("cancel_state")),
                     _s(v.get("last_seen_ago_s")), _s(v.get("restarts"), "0")])
    out += _table(["VENUE", "CONNECTION", "OPEN", "EQUITY", "CANCEL", "LAST SEEN S", "RESTARTS"], rows)
    for name, v in venues.items():
        bs = v.get("backstop")
        if bs:
            state = f"armed, fires at {_wall(bs.get('fires_at_ms'))}" if bs.get("armed") else \
                f"NOT ARMED ({bs.get('unavailable_reason') or 'not yet'})"
            out.append(f"  {name}: venue dead-man's switch {state}")
        if v.get("order_entry"):
            out.append(f"  {name}: order entry {v['order_entry'].upper()}")
    rules = st.get("rules") or []
    out += ["", f"rules ({len(rules)}):"]
    rows = [[_s(r.get("name")), _s(r.get("kind")), _s(r.get("observed")), _s(r.get("threshold")),
             "BREACHED" if r.get("breached") else "ok", "latch" if r.get("latch", True) else "alert"]
            for r in rules]
    out += _table(["RULE", "KIND", "OBSERVED", "THRESHOLD", "STATE", "ACTION"], rows)
    alarms = st.get("alarms") or {}
    out += ["", "alarms: none" if not alarms else f"ALARMS ({len(alarms)}):"]
    out += [f"  {k}: {m}" for k, m in alarms.items()]
    counters = st.get("counters") or {}
    if counters:
        out += ["", "counters: " + "  ".join(f"{k}={_s(v)}" for k, v in counters.items())]
    return "\n".join(out)


def render_command_reply(verb: str, reply: Mapping[str, Any]) -> str:
    if verb == "heartbeat":
        return "ok"
    state = str(reply.get("state", "?")).upper()
    venues = reply.get("venues") or {}
    vtxt = ", ".join(f"{n}: {v.get('cancel_state') or '-'} ({v.get('open_orders')} open)" for n, v in venues.items())
    if verb == "trip":
        return f"{state}: trip #{reply.get('trip_id')} latched; venues: {vtxt or 'none'}"
    if verb == "reset":
        if reply.get("noop"):
            return f"{state}: nothing to reset (was not tripped)"
        r = reply.get("last_reset") or {}
        return f"{state}: re-armed by {r.get('operator')} ({r.get('reason')})"
    return orjson.dumps(reply, default=str).decode()
