"""BookState.open_orders: the no-filter fast path returns exactly what the filter would."""

import pytest

from killswitch.engine.state import BookState
from killswitch.model import EVERYTHING, CancelScope, OpenOrdersSnapshot, OrderInfo, Side


def _book() -> BookState:
    s = BookState(("a", "b"))
    orders = [
        OrderInfo("a", "BTC", "a1", side=Side.BUY),
        OrderInfo("a", "ETH", "a2", side=Side.SELL),
        OrderInfo("a", "BTC", "a3", side=Side.SELL, is_trigger=True, reduce_only=True),
        OrderInfo("a", "BTC", "a4", is_trigger=True),
    ]
    s.apply(OpenOrdersSnapshot("a", tuple(orders), None, "reconcile"), 0.0)
    s.apply(OpenOrdersSnapshot("b", (OrderInfo("b", "BTC", "b1"),), None, "reconcile"), 0.0)
    return s


@pytest.mark.parametrize("scope", [
    None,
    EVERYTHING,
    CancelScope(venues=frozenset({"a"})),
    CancelScope(venues=frozenset({"b"})),
    CancelScope(products=frozenset({"BTC"})),
    CancelScope(sides=frozenset({Side.SELL})),
    CancelScope(keep_protective_stops=True),
    CancelScope(venues=frozenset({"a"}), by_id_only=True),
])
def test_open_orders_matches_the_scope_filter(scope):
    s = _book()
    expected = [o for o in s.book("a").orders.values() if scope is None or scope.covers(o)]
    got = s.open_orders("a", scope)
    assert [o.venue_order_id for o in got] == [o.venue_order_id for o in expected]
    # A copy, never the book's own container.
    got.clear()
    assert s.open_count("a") == 4
