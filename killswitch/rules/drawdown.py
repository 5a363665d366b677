"""drawdown: trip when equity falls too far below its peak.

Semantics (see README "Configuration reference"):

- One equity series per venue (``EquityObserved``); the rule breaches if any covered venue
  breaches. With ``aggregate: true`` there is one series instead: the sum of the latest
  equity of every covered venue, evaluated only once all of them have reported.
- Drawdown = peak - equity. Percent thresholds compare ``(peak - equity) / peak``; amount
  thresholds compare ``peak - equity``. Exactly at the threshold is a breach (>=).
- A peak <= 0 has no meaningful ratio: any further loss below it counts as 100%, none as 0%.
- Peak modes: ``since_start`` (highest equity since the rule started), ``rolling`` (highest
  within the last ``window``, monotonic clock; a monotonic deque keeps it O(1) amortized; the
  latest observation always stays in the window), ``daily_reset`` (restarts from the current
  equity at the first observation of each UTC day boundary ``HH:MM``, judged on the event's
  wall-clock ``ts_event_ms``; events without a wall time never reset).
- Cash flows (``CashFlowObserved``; the engine forwards operator ``DeclareCashFlow`` as one)
  shift the peak, every rolling-window entry and the last known equity by the amount. A
  withdrawal therefore never reads as a loss and a deposit never raises the baseline as if it
  were profit: drawdown in amount is unchanged by a flow. Venues must send the flow before
  the equity that includes it; operators must declare a withdrawal before making it.
- Stored values are kept *flow-adjusted* (equity minus cumulative flows), so a flow is O(1).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from killswitch.model import Breach, CashFlowObserved, EquityObserved
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader
from killswitch.schema.rule import RuleConfig, venue_equity_currency
from killswitch.units import Amount, UnitError, format_decimal, format_duration, parse_amount, parse_percent

THRESHOLD_HINT = "must be a percentage like 5% or an amount like 2000 USD"
HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
AGGREGATE = "<aggregate>"


@dataclass(frozen=True, kw_only=True)
class DrawdownConfig(RuleConfig):
    max_drawdown_pct: Decimal | None = None  # fraction: 5% -> 0.05
    max_drawdown_amount: Amount | None = None
    aggregate: bool = False
    peak: str = "since_start"  # since_start | rolling | daily_reset
    rolling_window_s: float | None = None
    daily_reset_s: int = 0  # seconds after 00:00 UTC
    debounce_count: int = 1
    debounce_s: float | None = None

    def threshold_text(self) -> str:
        if self.max_drawdown_pct is not None:
            return f"-{format_decimal(self.max_drawdown_pct * 100)}%"
        return f"-{self.max_drawdown_amount}"

    def describe(self) -> str:
        peak = {
            "since_start": "peak since start",
            "rolling": f"rolling peak over {format_duration(self.rolling_window_s or 0)}",
            "daily_reset": f"peak reset daily at {self.daily_reset_s // 3600:02d}:{self.daily_reset_s % 3600 // 60:02d} UTC",
        }[self.peak]
        series = "aggregate equity" if self.aggregate else "equity per venue"
        deb = ""
        if self.debounce_s is not None:
            deb = f", sustained {format_duration(self.debounce_s)}"
        elif self.debounce_count > 1:
            deb = f", {self.debounce_count} consecutive observations"
        return f"{series} drawdown >= {self.threshold_text()[1:]} from {peak}{deb}"

    def cross_check(self, ctx: Any, r: MapReader, venues: dict, covered: list) -> None:
        currencies = {v.name: venue_equity_currency(v) for v in covered}
        amount = self.max_drawdown_amount
        if amount is not None and amount.currency is not None:
            for name, cur in currencies.items():
                if cur != amount.currency:
                    r.error("max_drawdown", f"threshold is in {amount.currency} but venue {name!r} "
                                            f"reports equity in {cur}")
        if self.aggregate and len(set(currencies.values())) > 1:
            r.error("aggregate", "cannot sum equity in different currencies: "
                                 + ", ".join(f"{n}={c}" for n, c in currencies.items()))


def _parse_threshold(node: Any) -> tuple[Decimal | None, Amount | None]:
    value = getattr(node, "value", None)
    if isinstance(value, str) and value.strip().endswith("%"):
        pct = parse_percent(value)
        if pct <= 0 or pct > 1:
            raise ValueError("a drawdown percentage must be above 0% and at most 100%")
        return pct, None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(THRESHOLD_HINT)
    try:
        amount = parse_amount(value)
    except UnitError:
        raise ValueError(THRESHOLD_HINT) from None
    if amount.value <= 0:
        raise ValueError("a drawdown amount must be greater than 0")
    return None, amount


def _parse_hhmm(node: Any) -> str:
    value = getattr(node, "value", None)
    # YAML 1.1 reads an unquoted 12:30 as the base-60 integer 750: insist on quotes.
    if not isinstance(value, str) or not HHMM.fullmatch(value):
        raise ValueError('must be a UTC time written "HH:MM" in quotes, e.g. daily_reset: "00:00"')
    return value


def parse_config(r: MapReader, common: dict) -> DrawdownConfig | None:
    threshold = r.convert("max_drawdown", None, _parse_threshold, required=True)
    aggregate = r.bool("aggregate", False)
    peak, window_s, reset_s = "since_start", None, 0
    node = r.raw("peak")
    if node is not None and getattr(node, "value", 0) is not None:
        if getattr(node, "value", None) == "since_start":
            pass
        elif hasattr(node, "entries") and len(node.entries) == 1 and "rolling" in node.entries:
            p = MapReader(r.ctx, node, r.key_path("peak"), r.base_dir)
            peak, window_s = "rolling", p.duration("rolling", required=True)
            p.finish()
        elif hasattr(node, "entries") and len(node.entries) == 1 and "daily_reset" in node.entries:
            p = MapReader(r.ctx, node, r.key_path("peak"), r.base_dir)
            text = p.convert("daily_reset", None, _parse_hhmm, required=True)
            p.finish()
            peak = "daily_reset"
            if isinstance(text, str):
                reset_s = int(text[:2]) * 3600 + int(text[3:]) * 60
        else:
            r.error("peak", 'must be since_start, {rolling: 1h} or {daily_reset: "00:00"}')
    count, debounce_s = 1, None
    d = r.sub("debounce")
    if d is not None:
        if d.has("count") == d.has("duration"):
            d.ctx.error(d.node.mark, d.path, "debounce takes exactly one of count or duration")
        count = d.int("count", 1, min_value=1)
        debounce_s = d.duration("duration", None)
        d.finish()
    pct, amount = threshold if isinstance(threshold, tuple) else (threshold, threshold)
    return DrawdownConfig(
        **common,
        max_drawdown_pct=pct,
        max_drawdown_amount=amount,
        aggregate=aggregate,
        peak=peak,
        rolling_window_s=window_s,
        daily_reset_s=reset_s,
        debounce_count=count,
        debounce_s=debounce_s,
    )


class _Series:
    """One equity series. Values are flow-adjusted: real = stored + ``flows``."""

    __slots__ = ("flows", "peak_adj", "window", "equity_adj", "day", "hits", "since_s")

    def __init__(self) -> None:
        self.flows = Decimal(0)
        self.peak_adj: Decimal | None = None
        self.window: deque[tuple[float, Decimal]] = deque()  # (t, adj) with decreasing adj
        self.equity_adj: Decimal | None = None
        self.day: int | None = None
        self.hits = 0
        self.since_s: float | None = None

    def peak(self) -> Decimal | None:
        if self.window:
            return self.window[0][1] + self.flows
        return None if self.peak_adj is None else self.peak_adj + self.flows

    def equity(self) -> Decimal | None:
        return None if self.equity_adj is None else self.equity_adj + self.flows


class DrawdownRule(RuleBase):
    watches = frozenset({EquityObserved, CashFlowObserved})

    def __init__(self, config: DrawdownConfig) -> None:
        super().__init__(config)
        self.needs_tick = config.debounce_s is not None or config.peak == "rolling"
        self._series: dict[str, _Series] = {}
        self._latest: dict[str, Decimal] = {}  # aggregate mode: last equity per venue (real)
        self._currency: dict[str, str] = {}

    # -- state updates ---------------------------------------------------------------------

    def _get(self, key: str) -> _Series:
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        return s

    def _observe(self, s: _Series, equity: Decimal, now_s: float, ts_event_ms: int) -> None:
        cfg = self.config
        adj = equity - s.flows
        if cfg.peak == "daily_reset" and ts_event_ms > 0:
            day = (ts_event_ms // 1000 - cfg.daily_reset_s) // 86400
            if s.day is not None and day != s.day:
                s.peak_adj = None
            s.day = day
        if cfg.peak == "rolling":
            w = s.window
            while w and w[-1][1] <= adj:
                w.pop()
            w.append((now_s, adj))
            self._expire(s, now_s)
        elif s.peak_adj is None or adj > s.peak_adj:
            s.peak_adj = adj
        s.equity_adj = adj

    def _expire(self, s: _Series, now_s: float) -> None:
        window_s = self.config.rolling_window_s or 0.0
        w = s.window
        while len(w) > 1 and w[0][0] <= now_s - window_s:
            w.popleft()

    def _drawdown(self, s: _Series) -> tuple[Decimal, Decimal] | None:
        """(amount, fraction) below peak, or None before the first observation."""
        peak, equity = s.peak(), s.equity()
        if peak is None or equity is None:
            return None
        amount = peak - equity
        if peak > 0:
            return amount, amount / peak
        return amount, Decimal(1) if amount > 0 else Decimal(0)

    def _is_breaching(self, dd: tuple[Decimal, Decimal]) -> bool:
        cfg = self.config
        if cfg.max_drawdown_pct is not None:
            return dd[1] >= cfg.max_drawdown_pct
        assert cfg.max_drawdown_amount is not None
        return dd[0] >= cfg.max_drawdown_amount.value

    def _judge(self, key: str, s: _Series, now_s: float, observation: bool) -> Breach | None:
        dd = self._drawdown(s)
        if dd is None or not self._is_breaching(dd):
            s.hits, s.since_s = 0, None
            return None
        if observation:
            s.hits += 1
        if s.since_s is None:
            s.since_s = now_s
        cfg = self.config
        if cfg.debounce_s is not None:
            if now_s - s.since_s < cfg.debounce_s:
                return None
        elif s.hits < cfg.debounce_count:
            return None
        where = "aggregate of " + ", ".join(self._agg_venues(None)) if key == AGGREGATE else f"venue {key}"
        return self.config.breach(self._observed_text(key, s, dd), cfg.threshold_text(), detail=where)

    def _observed_text(self, key: str, s: _Series, dd: tuple[Decimal, Decimal]) -> str:
        cur = self._currency.get(key) or next(iter(self._currency.values()), "")
        cur = f" {cur}" if cur else ""
        pct = (dd[1] * 100).quantize(Decimal("0.01"))
        return (f"-{pct}% ({format_decimal(dd[0])} below peak {format_decimal(s.peak())}{cur}; "
                f"equity {format_decimal(s.equity())}{cur})")

    def _agg_venues(self, book: BookView | None) -> tuple[str, ...]:
        if self.config.venues:
            return self.config.venues
        if book is not None:
            return tuple(book.venues())
        return tuple(sorted(self._latest))

    # -- Rule protocol ---------------------------------------------------------------------

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        cfg = self.config
        if isinstance(event, CashFlowObserved):
            if not cfg.covers_venue(event.venue):
                return None
            # The flow is taken in the venue's equity currency: operator-declared flows
            # carry the model's default currency, so checking it would trip spuriously.
            self._get(event.venue).flows += event.amount
            if cfg.aggregate:
                self._get(AGGREGATE).flows += event.amount
                if event.venue in self._latest:
                    self._latest[event.venue] += event.amount
            return None
        if not isinstance(event, EquityObserved) or not cfg.covers_venue(event.venue):
            return None
        self._check_currency(event.venue, event.currency)
        if not cfg.aggregate:
            s = self._get(event.venue)
            self._observe(s, event.equity, now_s, event.ts_event_ms)
            return self._judge(event.venue, s, now_s, observation=True)
        self._latest[event.venue] = event.equity
        venues = self._agg_venues(book)
        if not venues or any(v not in self._latest for v in venues):
            return None  # aggregate only once every covered venue has reported
        s = self._get(AGGREGATE)
        self._observe(s, sum((self._latest[v] for v in venues), Decimal(0)), now_s, event.ts_event_ms)
        return self._judge(AGGREGATE, s, now_s, observation=True)

    def _check_currency(self, venue: str, currency: str) -> None:
        amount = self.config.max_drawdown_amount
        if amount is not None and amount.currency is not None and currency != amount.currency:
            # Fail closed: comparing OX against a USD limit would be silently wrong.
            raise ValueError(f"{venue} reports equity in {currency}, threshold is in {amount.currency}")
        known = self._currency.setdefault(venue, currency)
        if known != currency:
            raise ValueError(f"{venue} changed equity currency from {known} to {currency}")
        if self.config.aggregate and len(set(self._currency.values())) > 1:
            raise ValueError("aggregate drawdown over venues reporting different currencies")

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        breach = None
        for key, s in self._series.items():
            if self.config.aggregate != (key == AGGREGATE):
                continue
            if self.config.peak == "rolling":
                self._expire(s, now_s)
            breach = self._judge(key, s, now_s, observation=False) or breach
        return breach

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        cfg = self.config
        worst: tuple[Decimal, str, _Series, tuple[Decimal, Decimal]] | None = None
        for key, s in self._series.items():
            if cfg.aggregate != (key == AGGREGATE):
                continue
            dd = self._drawdown(s)
            if dd is None:
                continue
            metric = dd[1] if cfg.max_drawdown_pct is not None else dd[0]
            if worst is None or metric > worst[0]:
                worst = (metric, key, s, dd)
        threshold_value = cfg.max_drawdown_pct if cfg.max_drawdown_pct is not None else (
            cfg.max_drawdown_amount.value if cfg.max_drawdown_amount else None)
        if worst is None:
            return RuleStatus(self.name, self.kind, "no equity yet", cfg.threshold_text(),
                              None, threshold_value, False)
        metric, key, s, dd = worst
        return RuleStatus(self.name, self.kind, self._observed_text(key, s, dd), cfg.threshold_text(),
                          metric, threshold_value, self._is_breaching(dd))
