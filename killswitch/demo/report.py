"""What `killswitch demo` shows: one readable line per update, a block per trip, and a
machine-readable summary. Pure formatting over plain data (engine status, audit records,
the simulators' order counts); nothing here talks to the daemon or the venues.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, TextIO

MAX_RULE_TEXT = 64


@dataclass(frozen=True, slots=True)
class TripFigures:
    """One act's trip, with the evidence that it ended flat."""

    act: str
    title: str
    trip_id: int | None
    rule: str | None
    rule_kind: str | None
    observed: str | None
    threshold: str | None
    cancelled: dict[str, int]  # per venue, from the audit log's cancel results
    cancel_requests: dict[str, int]
    # First request of the trip on the wire / every venue confirmed flat by its own snapshot,
    # from the audit log's per-venue "flat" records (the engine counters keep only the last).
    trip_to_first_cancel_ms: float | None
    trip_to_flat_ms: float | None
    last_flat_ms: float | None  # engine counter: flat again after the last sweep (act 3)
    per_venue_ms: dict[str, dict[str, float | None]]  # audit "flat" records: first cancel / flat per venue
    sim_open_orders: dict[str, int]  # after the act, from the simulators' own books
    flat: bool
    swept: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class PeakTracker:
    """Highest equity seen per venue since the last reset (for the progress lines only;
    the drawdown rule keeps its own peak, whose worst case is shown next to it)."""

    peaks: dict[str, Decimal] = field(default_factory=dict)

    def update(self, venue: str, equity: Decimal) -> Decimal:
        peak = self.peaks.get(venue)
        if peak is None or equity > peak:
            self.peaks[venue] = peak = equity
        return peak

    def clear(self) -> None:
        self.peaks.clear()


def _dec(text: Any) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(str(text))
    except InvalidOperation:
        return None


def _money(d: Decimal) -> str:
    return f"{d:,.0f}" if d == d.to_integral_value() else f"{d:,.2f}"


def _shorten(text: str, limit: int = MAX_RULE_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_line(elapsed_s: float, status: dict, peaks: PeakTracker, focus_rules: Iterable[str],
                  sim_orders: dict[str, int]) -> str:
    """One line: latch state, per venue connection/equity vs peak/open orders, focus rules."""
    parts = [f"[{elapsed_s:5.1f}s] {status['state'].upper():7s}"]
    for name, v in status["venues"].items():
        conn = "up" if v.get("connected") else "DOWN"
        eq = _dec(v.get("equity"))
        if eq is not None:
            peak = peaks.update(name, eq)
            dd = (eq - peak) / peak * 100 if peak else Decimal(0)
            eq_text = f"eq {_money(eq)} {v.get('equity_currency') or ''} peak {_money(peak)} ({dd:+.2f}%)"
        else:
            eq_text = "eq ?"
        parts.append(f"{name} {conn} {eq_text}, {sim_orders.get(name, '?')} open")
    wanted = set(focus_rules)
    for r in status["rules"]:
        if r["name"] in wanted:
            mark = "!" if r["breached"] else ""
            # The headline only (drawdown appends "(... below peak ...)": the peak is shown above).
            observed = str(r["observed"]).split(" (", 1)[0]
            parts.append(f"{r['name']}{mark} {_shorten(observed)} vs {r['threshold']}")
    return " | ".join(parts)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def trip_block(fig: TripFigures) -> list[str]:
    if fig.rule is None:
        return [f"  {fig.act}: NO TRIP ({fig.error or 'rule did not trip'})"]
    lines = [
        f"  TRIP #{fig.trip_id}: rule {fig.rule} [{fig.rule_kind}] observed {fig.observed} (threshold {fig.threshold})",
        "    cancelled per venue (trip and sweeps): " + ", ".join(
            f"{v} {n} orders in {fig.cancel_requests.get(v, 0)} requests" for v, n in sorted(fig.cancelled.items())),
        f"    trip -> first cancel on the wire: {_ms(fig.trip_to_first_cancel_ms)}; "
        f"trip -> flat (venue snapshots): {_ms(fig.trip_to_flat_ms)}"
        + (f"; flat again after the last sweep: {_ms(fig.last_flat_ms)}" if fig.swept else ""),
    ]
    for v, t in sorted(fig.per_venue_ms.items()):
        lines.append(f"      {v}: first cancel {_ms(t.get('first_cancel_ms'))}, flat {_ms(t.get('flat_ms'))}")
    if fig.swept:
        lines.append(f"    orders placed after the trip and swept: {fig.swept}")
    verdict = "FLAT" if fig.flat else "NOT FLAT"
    lines.append("    simulators' own open orders afterwards: "
                 + ", ".join(f"{v} {n}" for v, n in sorted(fig.sim_open_orders.items())) + f" -> {verdict}")
    if fig.error:
        lines.append(f"    problem: {fig.error}")
    return lines


def figures_from_audit(records: list[dict], trip_id: int) -> tuple[dict, dict, dict]:
    """(orders cancelled per venue, cancel requests per venue, per-venue first-cancel/flat ms)."""
    cancelled: dict[str, int] = {}
    requests: dict[str, int] = {}
    per_venue: dict[str, dict[str, float | None]] = {}
    for rec in records:
        if rec.get("trip_id") != trip_id:
            continue
        venue = rec.get("venue")
        if rec.get("event") == "cancel_result" and venue:
            cancelled[venue] = cancelled.get(venue, 0) + int(rec.get("n_cancelled") or 0)
            requests[venue] = requests.get(venue, 0) + 1
        elif rec.get("event") == "flat" and venue and venue not in per_venue:
            per_venue[venue] = {"first_cancel_ms": rec.get("trip_to_first_cancel_ms"),
                                "flat_ms": rec.get("trip_to_flat_ms")}
    return cancelled, requests, per_venue


class Printer:
    """Human lines to ``out`` unless in JSON mode (then stdout carries only the summary)."""

    def __init__(self, out: TextIO, *, quiet: bool) -> None:
        self.out = out
        self.quiet = quiet
        self._last = ""

    def line(self, text: str = "") -> None:
        if not self.quiet:
            print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        # Skip exact repeats (the elapsed time aside) so the terminal shows changes, not noise.
        key = text.split("] ", 1)[-1]
        if key != self._last:
            self._last = key
            self.line(text)
