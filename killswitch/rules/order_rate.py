"""order_rate: trip when a venue sees too many *new* orders in a sliding window.

Counts ``OrderOpened`` with ``is_new=True`` per venue, stamped with the engine's ``now_s``.
``max`` is the largest number allowed within any ``window``: the ``max + 1``-th new order
inside one window breaches. An order placed exactly ``window`` after another no longer
shares its window (entries at ``t <= now - window`` have slid out).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from killswitch.model import Breach, OrderOpened
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader
from killswitch.schema.rule import RuleConfig
from killswitch.units import format_duration


class SlidingCount:
    """Timestamps within the last ``window_s``; O(1) amortized per add."""

    __slots__ = ("window_s", "_times")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, now_s: float) -> int:
        self._times.append(now_s)
        return self.count(now_s)

    def count(self, now_s: float) -> int:
        t = self._times
        while t and t[0] <= now_s - self.window_s:
            t.popleft()
        return len(t)


@dataclass(frozen=True, kw_only=True)
class WindowLimitConfig(RuleConfig):
    max: int
    window_s: float

    def threshold_text(self) -> str:
        return f"max {self.max} per {format_duration(self.window_s)}"


@dataclass(frozen=True, kw_only=True)
class OrderRateConfig(WindowLimitConfig):
    def describe(self) -> str:
        return f"more than {self.max} new orders within {format_duration(self.window_s)} on one venue"


def parse_window_limit(r: MapReader) -> dict:
    return {"max": r.int("max", required=True, min_value=1), "window_s": r.duration("window", required=True)}


def parse_config(r: MapReader, common: dict) -> OrderRateConfig | None:
    return OrderRateConfig(**common, **parse_window_limit(r))


class WindowCountRule(RuleBase):
    """Shared by order_rate and reject_burst: count matching events per venue per window."""

    needs_tick = False
    noun = "events"

    def __init__(self, config: WindowLimitConfig) -> None:
        super().__init__(config)
        self._windows: dict[str, SlidingCount] = {}

    def _venue_of(self, event: object) -> str | None:  # overridden
        raise NotImplementedError

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        venue = self._venue_of(event)
        if venue is None or not self.config.covers_venue(venue):
            return None
        w = self._windows.get(venue)
        if w is None:
            w = self._windows[venue] = SlidingCount(self.config.window_s)
        n = w.add(now_s)
        if n > self.config.max:
            return self.config.breach(
                f"{n} {self.noun} in {format_duration(self.config.window_s)} on {venue}",
                self.config.threshold_text(), detail=venue)
        return None

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        return None

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        worst_venue, worst = "", 0
        for venue, w in self._windows.items():
            n = w.count(now_s)
            if n > worst:
                worst_venue, worst = venue, n
        where = f" on {worst_venue}" if worst_venue else ""
        return RuleStatus(self.name, self.kind,
                          f"{worst} {self.noun} in last {format_duration(self.config.window_s)}{where}",
                          self.config.threshold_text(), Decimal(worst), Decimal(self.config.max),
                          worst > self.config.max)


class OrderRateRule(WindowCountRule):
    watches = frozenset({OrderOpened})
    noun = "new orders"

    def _venue_of(self, event: object) -> str | None:
        if isinstance(event, OrderOpened) and event.is_new:
            return event.order.venue
        return None
