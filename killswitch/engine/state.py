"""The engine's per-venue book: open orders, positions, marks, feed health. Pure.

Only the engine task mutates it (single writer). Counters are maintained incrementally so
rules ask O(1) questions (``open_count``) instead of rescanning orders; a full snapshot
replaces one venue's orders in O(n) of that snapshot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from killswitch.model import (
    CancelScope,
    EquityObserved,
    EquityUnavailable,
    MarkPriceObserved,
    OpenOrdersSnapshot,
    OrderClosed,
    OrderFilled,
    OrderInfo,
    OrderOpened,
    PositionObserved,
    VenueConnected,
    VenueDisconnected,
)

ZERO = Decimal(0)
# Produced by REST/gateway requests (reconcile, drift and equity polls), not by the account
# stream: they must not make a stalled stream look alive (stale_heartbeat {venue: ...}).
POLL_EVENTS = frozenset({OpenOrdersSnapshot, EquityObserved, EquityUnavailable})


@dataclass(slots=True)
class VenueBook:
    orders: dict[str, OrderInfo] = field(default_factory=dict)
    per_product: Counter = field(default_factory=Counter)
    positions: dict[str, Decimal] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)
    equity: Decimal | None = None
    equity_currency: str = ""
    connected: bool = False
    trusted: bool = False  # a reconcile snapshot has been applied since the last connect
    last_seen_s: float | None = None  # the account stream's own liveness (never REST/gateway polls)
    disconnected_since_s: float | None = None


class BookState:
    def __init__(self, venues: tuple[str, ...] = ()) -> None:
        self._books: dict[str, VenueBook] = {v: VenueBook() for v in venues}
        self._total_open = 0

    # ---- BookView ------------------------------------------------------------------
    def venues(self) -> tuple[str, ...]:
        return tuple(self._books)

    def book(self, venue: str) -> VenueBook:
        b = self._books.get(venue)
        if b is None:
            b = self._books[venue] = VenueBook()
        return b

    def open_count(self, venue: str | None = None, product: str | None = None) -> int:
        if venue is None:
            if product is None:
                return self._total_open
            return sum(b.per_product.get(product, 0) for b in self._books.values())
        b = self._books.get(venue)
        if b is None:
            return 0
        return len(b.orders) if product is None else b.per_product.get(product, 0)

    def position_qty(self, venue: str, product: str) -> Decimal:
        b = self._books.get(venue)
        return b.positions.get(product, ZERO) if b else ZERO

    def mark_price(self, venue: str, product: str) -> Decimal | None:
        b = self._books.get(venue)
        return b.marks.get(product) if b else None

    def is_connected(self, venue: str) -> bool:
        b = self._books.get(venue)
        return bool(b and b.connected)

    def last_seen_s(self, venue: str) -> float | None:
        b = self._books.get(venue)
        return b.last_seen_s if b else None

    # ---- queries for the engine ----------------------------------------------------
    def open_orders(self, venue: str, scope: CancelScope | None = None) -> list[OrderInfo]:
        b = self._books.get(venue)
        if b is None:
            return []
        if scope is None or (scope.products is None and scope.sides is None and not scope.keep_protective_stops
                             and scope.covers_venue(venue)):
            return list(b.orders.values())  # the scope covers every order of this venue
        return [o for o in b.orders.values() if scope.covers(o)]

    # ---- mutation (engine task only) -----------------------------------------------
    def _add(self, b: VenueBook, o: OrderInfo) -> bool:
        prev = b.orders.get(o.venue_order_id)
        if prev is not None:
            if prev.product != o.product:
                b.per_product[prev.product] -= 1
                b.per_product[o.product] += 1
            b.orders[o.venue_order_id] = o
            return False
        b.orders[o.venue_order_id] = o
        b.per_product[o.product] += 1
        self._total_open += 1
        return True

    def _remove(self, b: VenueBook, order_id: str) -> OrderInfo | None:
        o = b.orders.pop(order_id, None)
        if o is not None:
            n = b.per_product[o.product] - 1
            if n:
                b.per_product[o.product] = n
            else:
                del b.per_product[o.product]
            self._total_open -= 1
        return o

    def apply(self, ev: object, now_s: float) -> bool:
        """Apply one event. Returns True when an order was newly added (sweep candidate)."""
        t = type(ev)
        if t is OrderOpened:  # the two events of a busy order feed, first
            b = self.book(ev.order.venue)
            b.last_seen_s = now_s
            return self._add(b, ev.order)
        if t is OrderClosed:
            b = self.book(ev.venue)
            b.last_seen_s = now_s
            self._remove(b, ev.venue_order_id)
            return False
        venue = getattr(ev, "venue", None)
        if venue is None:
            if isinstance(ev, OrderOpened):
                venue = ev.order.venue
            else:
                return False
        b = self.book(venue)
        if t not in POLL_EVENTS and not (t is PositionObserved and ev.polled):
            b.last_seen_s = now_s
        if isinstance(ev, OrderOpened):
            return self._add(b, ev.order)
        if isinstance(ev, OrderClosed):
            self._remove(b, ev.venue_order_id)
        elif isinstance(ev, OrderFilled):
            if ev.remaining is not None and ev.remaining <= 0:
                self._remove(b, ev.venue_order_id)
        elif isinstance(ev, OpenOrdersSnapshot):
            self._apply_snapshot(b, ev)
            if ev.purpose == "reconcile":
                b.trusted = True
        elif isinstance(ev, EquityObserved):
            b.equity = ev.equity
            b.equity_currency = ev.currency
        elif isinstance(ev, PositionObserved):
            b.positions[ev.product] = ev.qty
        elif isinstance(ev, MarkPriceObserved):
            b.marks[ev.product] = ev.mark_price
        elif isinstance(ev, VenueConnected):
            b.connected = True
            b.disconnected_since_s = None
        elif isinstance(ev, VenueDisconnected):
            if b.connected or b.disconnected_since_s is None:
                b.disconnected_since_s = now_s
            b.connected = False
            b.trusted = False
        return False

    def _apply_snapshot(self, b: VenueBook, ev: OpenOrdersSnapshot) -> None:
        fresh = {o.venue_order_id: o for o in ev.orders}
        for oid in [oid for oid, o in b.orders.items()
                    if oid not in fresh and (ev.products is None or o.product in ev.products)]:
            self._remove(b, oid)
        for o in ev.orders:
            self._add(b, o)
