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
  The arithmetic runs in a wide private decimal context (``PRECISION_DIGITS``) so that no
  accepted flow can round an equity away.
- Missing data fails closed (``on_missing: trip``, the default): a covered venue with no
  equity ``startup_grace`` after the rule started, or whose last *complete* equity is older
  than ``max_equity_age``, breaches. ``EquityUnavailable`` (an asset with no price) never
  counts as an equity; the breach names the asset. An aggregate with a silent member is
  missing. ``on_missing: alarm`` makes the same finding a non-latching alert.
- Baselines (peak, rolling window, last daily boundary, cumulative flows) survive reset,
  reload and restart: ``baseline_key``/``export_baseline``/``import_baseline`` feed
  ``killswitch.engine.rule_state``. The current equity and the missing-data clocks do not
  survive a restart (a restarted daemon waits for fresh equity, within the grace).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any

from killswitch.model import Breach, CashFlowObserved, EquityObserved, EquityUnavailable
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader
from killswitch.schema.rule import RuleConfig, venue_equity_currency
from killswitch.units import Amount, UnitError, format_decimal, format_duration, parse_amount, parse_percent

THRESHOLD_HINT = "must be a percentage like 5% or an amount like 2000 USD (with its currency)"
PRECISION_DIGITS = 96  # wide enough that equity +- any accepted flow is exact
MAX_PERSISTED_WINDOW = 256  # rolling-window entries kept in the state file (coalesced, conservatively)
ON_MISSING = ("trip", "alarm")
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
    on_missing: str = "trip"  # trip | alarm: what missing or stale equity does
    startup_grace_s: float = 60.0  # how long after start a venue may have no equity yet
    max_equity_age_s: float = 30.0  # a complete equity older than this is stale

    def baseline_key(self) -> dict:
        """The fields that define what a stored peak means; a change rebases it."""
        return {
            "kind": self.kind,
            "peak": self.peak,
            "rolling_window_s": self.rolling_window_s,
            "daily_reset_s": self.daily_reset_s if self.peak == "daily_reset" else None,
            "aggregate": self.aggregate,
            "venues": sorted(self.venues) if self.aggregate else None,
        }

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
        missing = (f"; equity missing {format_duration(self.startup_grace_s)} after start or older than "
                   f"{format_duration(self.max_equity_age_s)}: {self.on_missing}")
        return f"{series} drawdown >= {self.threshold_text()[1:]} from {peak}{deb}{missing}"

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
    if amount.currency is None:
        # A bare number would be an amount in each venue's own currency (5 OX is ~$0.05):
        # the risk manager says which they mean.
        text = format_decimal(amount.value)
        raise ValueError(f"a bare number is ambiguous: write {text}% for a percentage of the peak, "
                         f"or {text} USD (or the venue's equity currency, e.g. {text} OX) for an amount")
    if amount.value <= 0:
        raise ValueError("a drawdown amount must be greater than 0")
    return None, amount


def _parse_on_missing(node: Any) -> str:
    value = getattr(node, "value", None)
    if value not in ON_MISSING:
        raise ValueError("must be trip (the default: missing or stale equity trips) or alarm")
    return value


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
    on_missing = r.convert("on_missing", "trip", _parse_on_missing)
    grace_s = r.duration("startup_grace", 60.0)
    max_age_s = r.duration("max_equity_age", 30.0)
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
        on_missing=on_missing if isinstance(on_missing, str) else "trip",
        startup_grace_s=grace_s if isinstance(grace_s, float) else 60.0,
        max_equity_age_s=max_age_s if isinstance(max_age_s, float) else 30.0,
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

    def copy(self) -> _Series:
        c = _Series()
        c.flows, c.peak_adj, c.window = self.flows, self.peak_adj, deque(self.window)
        c.equity_adj, c.day = self.equity_adj, self.day
        return c


def _coalesce(window: list[tuple[float, Decimal]], limit: int) -> list[tuple[float, Decimal]]:
    """Shrink a decreasing window to ``limit`` entries without ever lowering a future peak.

    Two neighbours merge into (later time, higher value): the higher value then stays in
    the window longer than it really would, which can only make the drawdown look larger.
    """
    while len(window) > limit:
        merged = [(window[i + 1][0], window[i][1]) for i in range(0, len(window) - 1, 2)]
        if len(window) % 2:
            merged.append(window[-1])
        window = merged
    return window


class DrawdownRule(RuleBase):
    watches = frozenset({EquityObserved, CashFlowObserved, EquityUnavailable})

    def __init__(self, config: DrawdownConfig) -> None:
        super().__init__(config)
        self.needs_tick = True  # missing / stale equity is judged on ticks
        self._ctx = Context(prec=PRECISION_DIGITS)
        self._series: dict[str, _Series] = {}
        self._latest: dict[str, Decimal] = {}  # aggregate mode: last equity per venue (real)
        self._currency: dict[str, str] = {}
        self._start_s: float | None = None  # first now_s seen: the start-up grace runs from it
        self._seen_s: dict[str, float] = {}  # venue -> now_s of its last complete equity
        self._incomplete: dict[str, tuple[str, ...]] = {}  # venue -> assets with no price
        self._missing: Breach | None = None  # the current missing-data finding, if any
        self.baseline_version = 0  # bumped when something export_baseline returns changes

    # -- state updates ---------------------------------------------------------------------

    def _get(self, key: str) -> _Series:
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        return s

    def _real(self, s: _Series, adj: Decimal) -> Decimal:
        return self._ctx.add(adj, s.flows)

    def _observe(self, s: _Series, equity: Decimal, now_s: float, ts_event_ms: int) -> None:
        cfg = self.config
        adj = self._ctx.subtract(equity, s.flows)
        if cfg.peak == "daily_reset" and ts_event_ms > 0:
            day = (ts_event_ms // 1000 - cfg.daily_reset_s) // 86400
            if s.day is not None and day != s.day:
                s.peak_adj = None
            if s.day != day:
                self.baseline_version += 1
            s.day = day
        if cfg.peak == "rolling":
            w = s.window
            while w and w[-1][1] <= adj:
                w.pop()
            w.append((now_s, adj))
            self._expire(s, now_s)
            self.baseline_version += 1
        elif s.peak_adj is None or adj > s.peak_adj:
            s.peak_adj = adj
            self.baseline_version += 1
        s.equity_adj = adj

    def _expire(self, s: _Series, now_s: float) -> None:
        window_s = self.config.rolling_window_s or 0.0
        w = s.window
        while len(w) > 1 and w[0][0] <= now_s - window_s:
            w.popleft()

    def _peak(self, s: _Series) -> Decimal | None:
        if s.window:
            return self._real(s, s.window[0][1])
        return None if s.peak_adj is None else self._real(s, s.peak_adj)

    def _equity(self, s: _Series) -> Decimal | None:
        return None if s.equity_adj is None else self._real(s, s.equity_adj)

    def _drawdown(self, s: _Series) -> tuple[Decimal, Decimal] | None:
        """(amount, fraction) below peak, or None before the first observation."""
        peak, equity = self._peak(s), self._equity(s)
        if peak is None or equity is None:
            return None
        amount = self._ctx.subtract(peak, equity)
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
        return (f"-{pct}% ({format_decimal(dd[0])} below peak {format_decimal(self._peak(s))}{cur}; "
                f"equity {format_decimal(self._equity(s))}{cur})")

    def _agg_venues(self, book: BookView | None) -> tuple[str, ...]:
        if self.config.venues:
            return self.config.venues
        if book is not None:
            return tuple(book.venues())
        return tuple(sorted(self._latest))

    # -- missing and stale data ----------------------------------------------------------

    def _check_missing(self, book: BookView, now_s: float) -> Breach | None:
        """The first covered venue whose equity is missing or stale, as a breach (or None)."""
        cfg = self.config
        if self._start_s is None:
            self._start_s = now_s
        venues = self._agg_venues(book) if cfg.aggregate else (cfg.venues or tuple(book.venues()))
        for venue in venues:
            seen = self._seen_s.get(venue)
            if seen is None:
                waited = now_s - self._start_s
                if waited < cfg.startup_grace_s:
                    continue
                what = f"no equity from {venue} in {waited:.1f}s (startup grace {format_duration(cfg.startup_grace_s)})"
            else:
                age = now_s - seen
                if age < cfg.max_equity_age_s:
                    continue
                what = f"equity of {venue} is {age:.1f}s old (max_equity_age {format_duration(cfg.max_equity_age_s)})"
            missing = self._incomplete.get(venue)
            if missing:
                what += f"; valuation incomplete: no price for {', '.join(missing)}"
            if cfg.aggregate:
                what += " (aggregate member silent)"
            threshold = f"equity at most {format_duration(cfg.max_equity_age_s)} old"
            breach = cfg.breach(f"equity missing: {what}", threshold, detail=f"missing equity, venue {venue}")
            if cfg.on_missing == "alarm":
                breach = Breach(rule=breach.rule, kind=breach.kind, observed=breach.observed,
                                threshold=breach.threshold, scope=breach.scope, latch=False, detail=breach.detail)
            return breach
        return None

    # -- Rule protocol ---------------------------------------------------------------------

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        if self._start_s is None:
            self._start_s = now_s
        breach = self._on_event(event, book, now_s)
        if self._missing is not None:
            # Still missing elsewhere: keep saying so (an alert must not flap on every event).
            self._missing = self._check_missing(book, now_s)
            return breach or self._missing
        return breach

    def _on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        cfg = self.config
        if isinstance(event, CashFlowObserved):
            if not cfg.covers_venue(event.venue):
                return None
            # The flow is taken in the venue's equity currency: operator-declared flows
            # carry the model's default currency, so checking it would trip spuriously.
            s = self._get(event.venue)
            s.flows = self._ctx.add(s.flows, event.amount)
            if cfg.aggregate:
                agg = self._get(AGGREGATE)
                agg.flows = self._ctx.add(agg.flows, event.amount)
                if event.venue in self._latest:
                    self._latest[event.venue] = self._ctx.add(self._latest[event.venue], event.amount)
            self.baseline_version += 1
            return None
        if isinstance(event, EquityUnavailable):
            if cfg.covers_venue(event.venue):
                self._incomplete[event.venue] = tuple(event.missing)
            return None
        if not isinstance(event, EquityObserved) or not cfg.covers_venue(event.venue):
            return None
        self._check_currency(event.venue, event.currency)
        self._seen_s[event.venue] = now_s
        self._incomplete.pop(event.venue, None)
        if not cfg.aggregate:
            s = self._get(event.venue)
            self._observe(s, event.equity, now_s, event.ts_event_ms)
            return self._judge(event.venue, s, now_s, observation=True)
        self._latest[event.venue] = event.equity
        venues = self._agg_venues(book)
        if not venues or any(v not in self._latest for v in venues):
            return None  # aggregate only once every covered venue has reported (missing: on_tick)
        s = self._get(AGGREGATE)
        total = Decimal(0)
        for v in venues:
            total = self._ctx.add(total, self._latest[v])
        self._observe(s, total, now_s, event.ts_event_ms)
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
        self._missing = self._check_missing(book, now_s)
        return breach or self._missing

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
        missing = self._check_missing(book, now_s)
        if worst is None:
            if missing is not None:
                return RuleStatus(self.name, self.kind, missing.observed, cfg.threshold_text(),
                                  None, threshold_value, True)
            text = "no equity yet"
            if self._incomplete:
                text += "; valuation incomplete: " + "; ".join(
                    f"{v} has no price for {', '.join(a)}" for v, a in sorted(self._incomplete.items()))
            if self._start_s is not None:
                left = max(0.0, cfg.startup_grace_s - (now_s - self._start_s))
                text += f" ({left:.1f}s of startup grace left, then {cfg.on_missing})"
            return RuleStatus(self.name, self.kind, text, cfg.threshold_text(), None, threshold_value, False)
        metric, key, s, dd = worst
        observed = self._observed_text(key, s, dd)
        if missing is not None:
            observed += f"; {missing.observed}"
        return RuleStatus(self.name, self.kind, observed, cfg.threshold_text(),
                          metric, threshold_value, self._is_breaching(dd) or missing is not None)

    # -- baselines: persisted across restart, carried across reload and reset -------------

    def baseline_key(self) -> dict:
        return self.config.baseline_key()

    def export_baseline(self, wall_offset_s: float) -> dict:
        """Peaks, windows, day boundaries and flows per series; times as wall seconds.

        ``wall_offset_s`` is wall time minus the monotonic clock, to store window times
        in a form a restarted process (new monotonic origin) can read back.
        """
        out = {}
        for key, s in self._series.items():
            window = [(t + wall_offset_s, adj) for t, adj in s.window]
            window = _coalesce(window, MAX_PERSISTED_WINDOW)
            out[key] = {
                "flows": str(s.flows),
                "peak_adj": None if s.peak_adj is None else str(s.peak_adj),
                "day": s.day,
                "window": [[round(t, 3), str(adj)] for t, adj in window],
                "peak": None if self._peak(s) is None else str(self._peak(s)),
            }
        return {"series": out}

    def import_baseline(self, data: dict, wall_offset_s: float) -> None:
        """Restore what export_baseline wrote. Raises ValueError on anything malformed."""
        series = data.get("series")
        if not isinstance(series, dict):
            raise ValueError("series missing")
        restored: dict[str, _Series] = {}
        for key, item in series.items():
            if not isinstance(item, dict):
                raise ValueError(f"series {key!r} is not a mapping")
            s = _Series()
            s.flows = _finite(item.get("flows"), f"{key}.flows")
            if item.get("peak_adj") is not None:
                s.peak_adj = _finite(item["peak_adj"], f"{key}.peak_adj")
            day = item.get("day")
            if day is not None and (not isinstance(day, int) or isinstance(day, bool)):
                raise ValueError(f"{key}.day is not an integer")
            s.day = day
            window = item.get("window") or []
            if not isinstance(window, list) or len(window) > MAX_PERSISTED_WINDOW:
                raise ValueError(f"{key}.window is not a bounded list")
            for entry in window:
                if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], (int, float))):
                    raise ValueError(f"{key}.window entry malformed")
                s.window.append((float(entry[0]) - wall_offset_s, _finite(entry[1], f"{key}.window")))
            restored[key] = s
        self._series = restored
        self.baseline_version += 1

    def carry_from(self, old: object, *, baseline: bool = True) -> None:
        """In-process hand-over (reset, reload): baselines *and* what is live right now.

        ``baseline=False`` carries only the live part (equities, currencies, the
        missing-data clocks): the caller then rebases with :meth:`rebase_to`.
        """
        if not isinstance(old, DrawdownRule):
            return
        if baseline:
            self._series = {k: s.copy() for k, s in old._series.items()}
            self._latest = dict(old._latest)
        self._currency = dict(old._currency)
        self._start_s = old._start_s
        self._seen_s = dict(old._seen_s)
        self._incomplete = dict(old._incomplete)
        self.baseline_version += 1

    def rebase_to(self, equities: dict[str, Decimal], now_s: float, ts_event_ms: int) -> dict:
        """New baselines at the given current equities (operator rebase, incompatible config).

        Returns the new peaks per series, for the audit record. Venues with no known
        equity get their peak from their next observation.
        """
        cfg = self.config
        self._series = {}
        self._latest = {}
        if cfg.aggregate:
            venues = self._agg_venues(None)
            self._latest = {v: e for v, e in equities.items() if v in venues}
            if venues and all(v in self._latest for v in venues):
                total = Decimal(0)
                for v in venues:
                    total = self._ctx.add(total, self._latest[v])
                self._observe(self._get(AGGREGATE), total, now_s, ts_event_ms)
        else:
            for venue, equity in equities.items():
                if cfg.covers_venue(venue):
                    self._observe(self._get(venue), equity, now_s, ts_event_ms)
        self.baseline_version += 1
        return {k: str(self._peak(s)) for k, s in self._series.items()}

    def peaks(self) -> dict[str, str | None]:
        """Current peak per series (for audit records and ``killswitch status``)."""
        return {k: None if self._peak(s) is None else str(self._peak(s)) for k, s in self._series.items()}


def _finite(value: object, where: str) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"{where} is not a decimal string")
    try:
        d = Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{where} is not a decimal") from None
    if not d.is_finite():
        raise ValueError(f"{where} is not finite")
    return d
