"""Human rendering of status and command replies for the CLI (pure: dict in, text out).

Colour is the caller's decision (``use_colour``: a TTY, no ``NO_COLOR``, not ``TERM=dumb``);
the text is identical without it, so piped output and tests see plain text.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Mapping

import orjson

_RED, _GREEN, _YELLOW, _BOLD, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[1m", "\x1b[0m"


def use_colour(stream, environ: Mapping[str, str]) -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns colour off; so do pipes and TERM=dumb."""
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _Paint:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, text: str, *codes: str) -> str:
        return f"{''.join(codes)}{text}{_RESET}" if self.on and codes else text


def scope_text(scope: Mapping[str, Any] | None) -> str:
    """``{"venues": null, ...}`` -> "everything"; otherwise what the trip is limited to."""
    if not scope:
        return "everything"
    parts = []
    for key, label in (("venues", "venues"), ("products", "products"), ("sides", "sides")):
        if scope.get(key) is not None:
            parts.append(f"{label} {', '.join(str(x) for x in scope[key])}")
    if scope.get("by_id_only"):
        parts.append("by order id only")
    if scope.get("keep_protective_stops"):
        parts.append("protective stops kept")
    return "; ".join(parts) if parts else "everything"


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


def render_status(st: Mapping[str, Any], *, colour: bool = False) -> str:
    """The human view of ``{"op":"status"}`` (the reply minus "ok")."""
    paint = _Paint(colour)
    raw_state = str(st.get("state", "?")).upper()
    state = paint(raw_state, _BOLD, _RED) if raw_state == "TRIPPED" else paint(raw_state, _BOLD, _GREEN)
    flags = []
    flags.append("ready" if st.get("ready") else paint("NOT READY (starting)", _YELLOW))
    if st.get("dry_run"):
        flags.append(paint("DRY-RUN: no cancel is sent", _YELLOW))
    if st.get("degraded"):
        flags.append(paint(f"degraded: {', '.join(st['degraded'])} not up at start", _YELLOW))
    head = f"killswitch: {state}  ({'; '.join(flags)})"
    if st.get("pid"):
        head += f"  pid {st['pid']}"
    out = [head]
    if st.get("reload_errors"):
        out += ["", paint("RELOAD FAILED, running the previous configuration:", _YELLOW)]
        out += [f"  {e}" for e in st["reload_errors"]]
    trips = st.get("trips") or []
    if trips:
        out += ["", f"trips ({len(trips)}):"]
        rows = [[f"#{t.get('trip_id')}", _s(t.get("rule")), _s(t.get("observed")), _s(t.get("threshold")),
                 _s(t.get("source")), _wall(t.get("ts_wall_ms"))] for t in trips]
        out += _table(["TRIP", "RULE", "OBSERVED", "THRESHOLD", "SOURCE", "AT"], rows)
        for t in trips:
            who = f"; operator: {t['operator']}" if t.get("operator") else ""
            out.append(f"  #{t.get('trip_id')} reason: {t.get('reason')}{who}; scope: {scope_text(t.get('scope'))}")
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
    table = _table(["VENUE", "CONNECTION", "OPEN", "EQUITY", "CANCEL", "LAST SEEN S", "RESTARTS"], rows)
    # Colour whole lines after padding, so escape codes never skew the column widths.
    out += [table[0]] + [paint(line, _RED) if row[1] == "DOWN" else line for line, row in zip(table[1:], rows)]
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
    table = _table(["RULE", "KIND", "OBSERVED", "THRESHOLD", "STATE", "ACTION"], rows)
    out += [table[0]] + [paint(line, _RED) if row[4] == "BREACHED" else line for line, row in zip(table[1:], rows)]
    alarms = st.get("alarms") or {}
    out += ["", "alarms: none" if not alarms else paint(f"ALARMS ({len(alarms)}):", _BOLD, _RED)]
    out += [paint(f"  {k}: {m}", _RED) for k, m in alarms.items()]
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
        covered = reply.get("orders_in_scope")
        ctxt = "" if covered is None else "known orders in scope: " + (
            ", ".join(f"{n}: {c}" for n, c in covered.items()) or "none") + "; "
        return f"{state}: trip #{reply.get('trip_id')} latched; {ctxt}venues: {vtxt or 'none'}"
    if verb == "reset":
        if reply.get("noop"):
            return f"{state}: nothing to reset (was not tripped)"
        r = reply.get("last_reset") or {}
        return f"{state}: re-armed by {r.get('operator')} ({r.get('reason')})"
    if verb == "reopen":
        return f"reopened {reply.get('audit_log')} and {reply.get('intent')}"
    return orjson.dumps(reply, default=str).decode()
