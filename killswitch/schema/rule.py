"""What every rule entry has (name, venues, latch, action) and how its cancel scope is derived.

Each rule kind in :mod:`killswitch.rules` subclasses :class:`RuleConfig`; the config loader
sits above the rule registry, this module below it, so imports go one way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


from killswitch.model import Breach, CancelScope, Side
from killswitch.venues.base import HyperliquidConfig, OxfunConfig, VertexConfig

from killswitch.schema.nodes import YMap, YScalar
from killswitch.schema.reader import INVALID, Invalid, MapReader, item_product, item_side


# Rules: the common part (each kind adds its own keys in killswitch/rules/<kind>.py)


@dataclass(frozen=True, slots=True)
class Action:
    """What a breach cancels, before restriction to the rule's venues."""

    kind: str = "cancel_all"  # cancel_all | cancel_products | cancel_orders
    products: tuple[str, ...] | None = None
    sides: tuple[Side, ...] | None = None
    lock: bool = False  # also lock order entry on the rule's venues (venue capability)

    def describe(self) -> str:
        if self.lock:
            return dataclasses.replace(self, lock=False).describe() + " and lock order entry"
        if self.kind == "cancel_all":
            return "cancel all orders"
        what = f"products {', '.join(self.products)}" if self.products else "all products"
        if self.kind == "cancel_products":
            return f"cancel {what}"
        sides = f", sides {'/'.join(s.value for s in self.sides)}" if self.sides else ""
        return f"cancel orders by id ({what}{sides})"


@dataclass(frozen=True, kw_only=True)
class RuleConfig:
    """Keys every rule has. Subclasses (one per kind) are frozen and kw_only."""

    name: str
    kind: str
    venues: tuple[str, ...] = ()  # empty = every configured venue
    latch: bool = True  # False: alert only, never cancels
    fleet: bool = False  # True: a trip of this rule trips every instance of the fleet
    action: Action = Action()
    keep_protective_stops: bool = False

    @property
    def action_scope(self) -> CancelScope:
        return CancelScope(
            venues=frozenset(self.venues) if self.venues else None,
            products=frozenset(self.action.products) if self.action.products else None,
            sides=frozenset(self.action.sides) if self.action.sides else None,
            keep_protective_stops=self.keep_protective_stops,
            by_id_only=self.action.kind == "cancel_orders",
        )

    def covers_venue(self, venue: str) -> bool:
        return not self.venues or venue in self.venues

    def breach(self, observed: str, threshold: str, detail: str = "") -> Breach:
        return Breach(rule=self.name, kind=self.kind, observed=observed, threshold=threshold,
                      scope=self.action_scope, latch=self.latch, detail=detail, lock=self.action.lock)

    def describe(self) -> str:
        """What triggers the rule, in words (overridden per kind)."""
        return self.kind


def parse_action(r: MapReader) -> Any:
    """``action:`` as before, plus an optional ``lock: true`` next to the verb
    (``{cancel_all: null, lock: true}``; ``{lock: true}`` alone means cancel all + lock)."""
    node = r.raw("action")
    if isinstance(node, YMap) and "lock" in node.entries:
        lock_node = node.entries["lock"][1]
        if not isinstance(lock_node, YScalar) or not isinstance(lock_node.value, bool):
            return r.error("action", "lock must be true or false")
        rest = {k: v for k, v in node.entries.items() if k != "lock"}
        if not rest or list(rest) == ["cancel_all"]:
            return Action(lock=lock_node.value)
        action = _parse_action_node(r, YMap(node.mark, rest))
        return dataclasses.replace(action, lock=lock_node.value) if isinstance(action, Action) else action
    return _parse_action_node(r, node)


def _parse_action_node(r: MapReader, node: Any) -> Any:
    if node is None or (isinstance(node, YScalar) and node.value is None):
        return Action()
    hint = "must be cancel_all, {cancel_products: [...]} or {cancel_orders: {products: [...], sides: [...]}}"
    if isinstance(node, YScalar):
        if node.value == "cancel_all":
            return Action()
        return r.error("action", hint)
    if not isinstance(node, YMap) or len(node.entries) != 1:
        return r.error("action", hint)
    a = MapReader(r.ctx, node, r.key_path("action"), r.base_dir)
    if a.has("cancel_products"):
        products = a.list("cancel_products", item_product, non_empty=True)
        a.finish()
        return INVALID if isinstance(products, Invalid) else Action("cancel_products", products)
    if a.has("cancel_orders"):
        node_co = a.raw("cancel_orders")
        if isinstance(node_co, YScalar) and node_co.value is None:
            return Action("cancel_orders")
        co = a.sub("cancel_orders")
        a.finish()
        if co is None:
            return INVALID
        products = co.list("products", item_product)
        sides = co.list("sides", item_side)
        co.finish()
        if isinstance(products, Invalid) or isinstance(sides, Invalid):
            return INVALID
        return Action("cancel_orders", products or None, sides or None)
    a.finish()
    return INVALID


def venue_products(venue: OxfunConfig | VertexConfig) -> tuple[str, ...]:
    """Products the venue entry watches, as strings (empty = not restricted)."""
    if isinstance(venue, OxfunConfig):
        return venue.markets
    if isinstance(venue, HyperliquidConfig):
        return venue.coins
    return tuple(str(p) for p in venue.products)


def venue_equity_currency(venue: OxfunConfig | VertexConfig) -> str:
    return venue.equity_currency if isinstance(venue, OxfunConfig) else "USD"


