"""The cancel planner: cheapest complete plan, table-driven."""

import pytest

from killswitch.engine.plan import CANCEL_ALL, CANCEL_ORDERS, CANCEL_PRODUCTS, plan_cancels
from killswitch.model import CancelScope, OrderInfo, Side
from killswitch.venues.base import VenueCapabilities

NADO = VenueCapabilities(50, 5, 0, 1, 100, True)
OX = VenueCapabilities(1, 1, 1, 0, 20, False, prefer_by_id_below=100)


def orders(venue, spec, **kw):
    out, i = [], 0
    for product, n in spec.items():
        for _ in range(n):
            i += 1
            out.append(OrderInfo(venue, product, f"{product}-{i}", **kw))
    return out


def plan(caps, in_scope, scope=CancelScope(), *, trusted=True, round_no=1, budget=None, sweep=False, all_known=None):
    return plan_cancels(venue="v", scope=scope, in_scope=in_scope, all_known=all_known or in_scope, caps=caps,
                        trusted=trusted, round_no=round_no, budget_available=budget, sweep=sweep)


@pytest.mark.parametrize(
    "caps, spec, trusted, round_no, budget, verbs, cost",
    [
        # Nado, 200 orders on 5 products: 5 products x 5 = 25 beats 200 digests and 50.
        (NADO, {"1": 40, "2": 40, "3": 40, "4": 40, "5": 40}, True, 1, None, [CANCEL_PRODUCTS], 25),
        # Nado, 3 orders: 3 digests are cheapest.
        (NADO, {"1": 3}, True, 1, None, [CANCEL_ORDERS], 3),
        # Nado, 60 orders across 11 products: 5 x 11 = 55 > 50 -> all products.
        (NADO, {str(p): 6 for p in range(11)}, True, 1, None, [CANCEL_ALL], 50),
        # Untrusted book (reconnecting): only verbs that do not depend on our knowledge.
        (NADO, {"1": 3}, False, 1, None, [CANCEL_ALL], 50),
        # Round 2: the book missed something; go wide.
        (NADO, {"1": 3}, True, 2, None, [CANCEL_ALL], 50),
        # Nado, 16 orders on 2 products: 2 x 5 = 10 beats 16 digests.
        (NADO, {"1": 8, "2": 8}, True, 1, 20, [CANCEL_PRODUCTS], 10),
        # No budget left at all: still the cheapest complete plan (the venue answers 1000,
        # the engine retries when the window frees) - never "nothing".
        (NADO, {"1": 8, "2": 8}, True, 1, 0, [CANCEL_PRODUCTS], 10),
        # OX.FUN, 100 known orders: by id over the open socket (5 WS batches).
        (OX, {"A": 50, "B": 30, "C": 20}, True, 1, None, [CANCEL_ORDERS], 5),
        # OX.FUN, 150 orders: above prefer_by_id_below -> one REST cancel-all.
        (OX, {"A": 150}, True, 1, None, [CANCEL_ALL], 1),
        # Nothing known: still a bulk cancel (fail closed).
        (OX, {}, True, 1, None, [CANCEL_ALL], 1),
    ],
)
def test_cheapest_complete_plan(caps, spec, trusted, round_no, budget, verbs, cost):
    p = plan(caps, orders("v", spec), trusted=trusted, round_no=round_no, budget=budget)
    assert [s.verb for s in p.steps] == verbs
    assert p.total_cost == cost


def test_by_id_batches_respect_request_size():
    p = plan(OX, orders("v", {"A": 45}))
    (step,) = p.steps
    assert len(step.orders) == 45
    assert p.total_cost == 3  # ceil(45 / 20) WS messages


def test_product_scope_uses_product_verb_never_all():
    scope = CancelScope(products=frozenset({"1", "2"}))
    p = plan(NADO, orders("v", {"1": 20, "2": 20}), scope, round_no=2)
    assert [(s.verb, s.products) for s in p.steps] == [(CANCEL_PRODUCTS, ("1", "2"))]


def test_sides_filter_forces_by_id():
    scope = CancelScope(sides=frozenset({Side.BUY}))
    p = plan(NADO, orders("v", {"1": 80}, side=Side.BUY), scope, round_no=3)
    assert [s.verb for s in p.steps] == [CANCEL_ORDERS]


def test_sweep_is_by_id():
    p = plan(NADO, orders("v", {"1": 1}), sweep=True, round_no=5)
    assert [s.verb for s in p.steps] == [CANCEL_ORDERS]


def test_keep_protective_stops_two_plane_venue_spares_trigger_plane():
    resting = orders("v", {"1": 60})
    stops = [OrderInfo("v", "1", "stop-1", is_trigger=True, reduce_only=True)]
    naked = [OrderInfo("v", "1", "trig-2", is_trigger=True, reduce_only=False)]
    scope = CancelScope(keep_protective_stops=True)
    in_scope = [o for o in resting + stops + naked if scope.covers(o)]
    p = plan(NADO, in_scope, scope, all_known=resting + stops + naked)
    bulk, cleanup = p.steps
    assert bulk.include_triggers is False
    assert [o.venue_order_id for o in cleanup.orders] == ["trig-2"]


def test_keep_protective_stops_single_plane_venue_goes_by_id():
    resting = orders("v", {"A": 150})
    stop = OrderInfo("v", "A", "stop", is_trigger=True, reduce_only=True)
    scope = CancelScope(keep_protective_stops=True)
    in_scope = [o for o in resting + [stop] if scope.covers(o)]
    p = plan(OX, in_scope, scope, all_known=resting + [stop])
    assert [s.verb for s in p.steps] == [CANCEL_ORDERS]
    assert "stop" not in {o.venue_order_id for o in p.steps[0].orders}


def test_by_id_refs_are_built_only_when_by_id_wins(monkeypatch):
    """A 1000-order book must not pay for 1000 OrderRefs when a bulk verb wins (the global-trip
    path plans every venue before the first cancel goes out)."""
    import killswitch.engine.plan as plan_mod

    built = []
    real_refs = plan_mod._refs
    monkeypatch.setattr(plan_mod, "_refs", lambda orders: built.append(len(orders)) or real_refs(orders))
    p = plan(NADO, orders("v", {"2": 500, "4": 500}))  # 2 products x 5 = 10 beats 1000 digests
    assert [(s.verb, s.products) for s in p.steps] == [(CANCEL_PRODUCTS, ("2", "4"))]
    assert built == []
    p = plan(NADO, orders("v", {"1": 3}))  # 3 digests beat 5 and 50: by id, refs for every order
    assert [s.verb for s in p.steps] == [CANCEL_ORDERS] and built == [3]
    assert [o.venue_order_id for o in p.steps[0].orders] == ["1-1", "1-2", "1-3"]


@pytest.mark.parametrize("budget", [None, 0, 5, 12, 1000])
def test_lazy_by_id_candidate_competes_on_its_full_cost(budget):
    # 12 digests (cost 12) vs 3 products (15) vs all (50): by id is the cheapest whether or
    # not anything fits the budget, as when the by-id plan was built up front.
    p = plan(NADO, orders("v", {"1": 4, "2": 4, "3": 4}), budget=budget)
    assert [s.verb for s in p.steps] == [CANCEL_ORDERS] and p.total_cost == 12
    assert len(p.steps[0].orders) == 12
