"""The read-only HTML status page served at ``/status`` on the metrics listener.

Pure: the status dict (the control socket's ``status`` reply) in, one HTML document out. No
scripts at all — it refreshes with ``<meta http-equiv="refresh">`` — inline CSS only, and
the response carries a Content-Security-Policy that forbids loading anything, so the page
can neither fetch from elsewhere nor change the daemon's state (the listener routes only
``GET``). Every value is HTML-escaped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Mapping

from killswitch.control.render import scope_text

REFRESH_S = 2
HEADERS = {
    "content-security-policy": ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#111;background:#fafafa}
main{padding:0 24px 24px}
.banner{padding:18px 24px;font-size:32px;font-weight:700;color:#fff;letter-spacing:.05em}
.tripped{background:#c00000}.armed{background:#127a2e}
.note{font-size:15px;font-weight:400;letter-spacing:0;margin-left:16px}
h2{font-size:16px;margin:22px 0 6px}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eee}
.bad{color:#c00000;font-weight:700}.warn{color:#a06000;font-weight:700}
.alarm{background:#fde8e8;border:1px solid #c00000;padding:6px 10px;margin:4px 0}
footer{color:#666;font-size:12px;margin-top:20px}
"""


def _e(value: Any, none: str = "-") -> str:
    return escape(none if value is None else str(value))


def _wall(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def render_status_page(st: Mapping[str, Any], *, now_ms: int) -> str:
    tripped = str(st.get("state")) == "tripped"
    notes = []
    if not st.get("ready"):
        notes.append("NOT READY (starting)")
    if st.get("dry_run"):
        notes.append("DRY-RUN: no cancel is sent")
    if st.get("degraded"):
        notes.append("degraded: " + ", ".join(str(v) for v in st["degraded"]) + " not up at start")
    if st.get("reload_errors"):
        notes.append("RELOAD FAILED: previous configuration running")
    note = f'<span class="note">{escape("; ".join(notes))}</span>' if notes else ""
    banner = (f'<div id="banner" class="banner {"tripped" if tripped else "armed"}">'
              f'{"TRIPPED" if tripped else "ARMED"}{note}</div>')

    parts = [banner, "<main>"]
    alarms = st.get("alarms") or {}
    parts.append(f"<h2>Alarms ({len(alarms)})</h2>")
    parts += [f'<div class="alarm"><b>{_e(k)}</b>: {_e(m)}</div>' for k, m in alarms.items()] or ["<p>none</p>"]

    trips = st.get("trips") or []
    if trips:
        parts.append(f"<h2>Trips ({len(trips)})</h2>")
        parts.append(_table(
            ["#", "Rule", "Observed", "Threshold", "Reason", "Operator", "Scope", "Source", "At"],
            [[_e(t.get("trip_id")), _e(t.get("rule")), _e(t.get("observed")), _e(t.get("threshold")),
              _e(t.get("reason")), _e(t.get("operator") or None), _e(scope_text(t.get("scope"))),
              _e(t.get("source")), _e(_wall(t.get("ts_wall_ms")))] for t in trips]))
    elif st.get("last_reset"):
        r = st["last_reset"]
        parts.append(f"<p>Last reset by {_e(r.get('operator'))} at {_e(_wall(r.get('ts_wall_ms')))}: "
                     f"{_e(r.get('reason'))}</p>")

    venues = st.get("venues") or {}
    parts.append(f"<h2>Venues ({len(venues)})</h2>")
    vrows, vclasses = [], []
    for name, v in venues.items():
        conn = "up" if v.get("connected") else "DOWN"
        if v.get("connected") and not v.get("trusted", True):
            conn = "up (unreconciled)"
        equity = None if v.get("equity") is None else f"{v['equity']} {v.get('equity_currency') or ''}".strip()
        vrows.append([_e(name), _e(conn), _e(v.get("open_orders")), _e(equity), _e(v.get("cancel_state")),
                      _e(v.get("last_seen_ago_s")), _e(v.get("restarts"), "0")])
        vclasses.append("bad" if conn == "DOWN" else "")
    parts.append(_table(["Venue", "Connection", "Open orders", "Equity", "Cancel", "Last seen (s)", "Restarts"],
                        vrows, vclasses))

    rules = st.get("rules") or []
    parts.append(f"<h2>Rules ({len(rules)})</h2>")
    parts.append(_table(
        ["Rule", "Kind", "Observed", "Threshold", "State", "Action"],
        [[_e(r.get("name")), _e(r.get("kind")), _e(r.get("observed")), _e(r.get("threshold")),
          "BREACHED" if r.get("breached") else "ok", "latch" if r.get("latch", True) else "alert"] for r in rules],
        ["bad" if r.get("breached") else "" for r in rules]))

    counters = st.get("counters") or {}
    if counters:
        parts.append("<h2>Counters</h2>")
        parts.append(_table(["Counter", "Value"], [[_e(k), _e(v)] for k, v in counters.items()]))
    parts.append(f"<footer>killswitch pid {_e(st.get('pid'))} · read-only · refreshes every {REFRESH_S} s · "
                 f"{_e(_wall(now_ms))}</footer></main>")
    title = f"killswitch: {'TRIPPED' if tripped else 'ARMED'}"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_S}">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
