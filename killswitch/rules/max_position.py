"""max_position: trip when a position is too large, in quantity and/or notional.

Per (venue, product), optionally only for ``products``. Quantity compares ``|qty|``
(long and short alike). Notional is the event's own ``notional`` when the venue layer
provides it, else ``|qty| * mark`` from the book; when neither is known only the quantity
limit can judge. A new mark (``MarkPriceObserved``) re-judges the book's position at that
mark. The limits are the largest values allowed: strictly above breaches. The notional
currency is informational: it is the venue's quote currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from killswitch.model import Breach, MarkPriceObserved, PositionObserved
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader, item_product
from killswitch.schema.rule import RuleConfig
from killswitch.units import Amount, format_decimal, parse_amount


@dataclass(frozen=True, kw_only=True)
class MaxPositionConfig(RuleConfig):
    max_qty: Decimal | None = None
    max_notional: Amount | None = None
    products: tuple[str, ...] = ()  # empty = every product

    def threshold_text(self) -> str:
        parts = []
        if self.max_qty is not None:
            parts.append(f"|qty| {format_decimal(self.max_qty)}")
        if self.max_notional is not None:
            parts.append(f"notional {self.max_notional}")
        return ", ".join(parts)

    def describe(self) -> str:
        where = f" on {', '.join(self.products)}" if self.products else " on any product"
        return f"position above {self.threshold_text()}{where}"


def _positive_amount(node: object) -> Amount:
    amount = parse_amount(getattr(node, "value", None))
    if amount.value <= 0:
        raise ValueError("must be greater than 0")
    return amount


def parse_config(r: MapReader, common: dict) -> MaxPositionConfig | None:
    max_qty = r.decimal("max_qty", None, positive=True)
    max_notional = r.convert("max_notional", None, _positive_amount)
    products = r.list("products", item_product)
    if not r.has("max_qty") and not r.has("max_notional"):
        r.ctx.error(r.node.mark, r.path, "needs max_qty and/or max_notional")
        return None
    return MaxPositionConfig(**common, max_qty=max_qty, max_notional=max_notional, products=products)


class MaxPositionRule(RuleBase):
    watches = frozenset({PositionObserved, MarkPriceObserved})
    needs_tick = False

    def __init__(self, config: MaxPositionConfig) -> None:
        super().__init__(config)
        self._products = frozenset(config.products)
        self._last: dict[tuple[str, str], tuple[Decimal, Decimal | None]] = {}

    def _covers(self, venue: str, product: str) -> bool:
        return self.config.covers_venue(venue) and (not self._products or product in self._products)

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        if isinstance(event, PositionObserved):
            if not self._covers(event.venue, event.product):
                return None
            qty = abs(event.qty)
            notional = event.notional
            if notional is None:
                mark = book.mark_price(event.venue, event.product)
                notional = None if mark is None else qty * abs(mark)
        elif isinstance(event, MarkPriceObserved):
            if not self._covers(event.venue, event.product):
                return None
            qty = abs(book.position_qty(event.venue, event.product))
            notional = qty * abs(event.mark_price)
        else:
            return None
        key = (event.venue, event.product)
        self._last[key] = (qty, notional)
        return self._judge(key, qty, notional)

    def _judge(self, key: tuple[str, str], qty: Decimal, notional: Decimal | None) -> Breach | None:
        cfg = self.config
        where = f"{key[0]} {key[1]}"
        if cfg.max_qty is not None and qty > cfg.max_qty:
            return cfg.breach(f"|qty| {format_decimal(qty)} on {where}", cfg.threshold_text(), detail=where)
        if cfg.max_notional is not None and notional is not None and notional > cfg.max_notional.value:
            return cfg.breach(f"notional {format_decimal(notional)} on {where}", cfg.threshold_text(),
                              detail=where)
        return None

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        return None

    def _ratio(self, qty: Decimal, notional: Decimal | None) -> Decimal:
        cfg = self.config
        ratios = [Decimal(0)]
        if cfg.max_qty is not None:
            ratios.append(qty / cfg.max_qty)
        if cfg.max_notional is not None and notional is not None:
            ratios.append(notional / cfg.max_notional.value)
        return max(ratios)

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        if not self._last:
            return RuleStatus(self.name, self.kind, "no position yet", self.config.threshold_text())
        key, (qty, notional) = max(self._last.items(), key=lambda kv: self._ratio(*kv[1]))
        shown = f"|qty| {format_decimal(qty)}"
        if notional is not None:
            shown += f", notional {format_decimal(notional)}"
        ratio = self._ratio(qty, notional)
        return RuleStatus(self.name, self.kind, f"{shown} on {key[0]} {key[1]}", self.config.threshold_text(),
                          ratio, Decimal(1), ratio > 1)
