"""max_open_orders: trip when an account (venue) or one product has too many open orders.

``max`` is the largest number allowed: ``max + 1`` open orders breaches. Counts come from
the engine's book (``BookView.open_count``, O(1)), which the engine updates *before* rules
see the event. Judged on ``OrderOpened`` (the order's venue and product) and on
``OpenOrdersSnapshot`` (the venue and each product in the snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from killswitch.model import Breach, OpenOrdersSnapshot, OrderOpened
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader
from killswitch.schema.rule import RuleConfig


@dataclass(frozen=True, kw_only=True)
class MaxOpenOrdersConfig(RuleConfig):
    max_per_venue: int | None = None
    max_per_product: int | None = None

    def threshold_text(self) -> str:
        parts = []
        if self.max_per_venue is not None:
            parts.append(f"{self.max_per_venue} per venue")
        if self.max_per_product is not None:
            parts.append(f"{self.max_per_product} per product")
        return ", ".join(parts)

    def describe(self) -> str:
        return f"open orders above {self.threshold_text()}"


def parse_config(r: MapReader, common: dict) -> MaxOpenOrdersConfig | None:
    per_venue = r.int("max", None, min_value=1)
    per_product = r.int("max_per_product", None, min_value=1)
    if not r.has("max") and not r.has("max_per_product"):
        r.ctx.error(r.node.mark, r.path, "needs max and/or max_per_product")
        return None
    return MaxOpenOrdersConfig(**common, max_per_venue=per_venue, max_per_product=per_product)


class MaxOpenOrdersRule(RuleBase):
    watches = frozenset({OrderOpened, OpenOrdersSnapshot})
    needs_tick = False

    def __init__(self, config: MaxOpenOrdersConfig) -> None:
        super().__init__(config)

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        if isinstance(event, OrderOpened):
            venue, products = event.order.venue, (event.order.product,)
        elif isinstance(event, OpenOrdersSnapshot):
            venue, products = event.venue, tuple({o.product for o in event.orders})
        else:
            return None
        if not self.config.covers_venue(venue):
            return None
        return self._check(book, venue, products)

    def _check(self, book: BookView, venue: str, products: tuple[str, ...]) -> Breach | None:
        cfg = self.config
        if cfg.max_per_venue is not None:
            n = book.open_count(venue)
            if n > cfg.max_per_venue:
                return cfg.breach(f"{n} open on {venue}", f"max {cfg.max_per_venue} per venue", detail=venue)
        if cfg.max_per_product is not None:
            for product in sorted(products):
                n = book.open_count(venue, product)
                if n > cfg.max_per_product:
                    return cfg.breach(f"{n} open on {venue} {product}",
                                      f"max {cfg.max_per_product} per product", detail=f"{venue} {product}")
        return None

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        return None

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        cfg = self.config
        venues = [v for v in book.venues() if cfg.covers_venue(v)]
        worst = max((book.open_count(v) for v in venues), default=0)
        limit = cfg.max_per_venue
        breached = limit is not None and worst > limit
        return RuleStatus(self.name, self.kind, f"{worst} open (busiest venue)", cfg.threshold_text(),
                          Decimal(worst), None if limit is None else Decimal(limit), breached)
