"""The cancel planner: the cheapest complete plan for one venue. Pure.

Verbs and what they cost are the venue's (``VenueCapabilities``); what must be cancelled is
the scope plus what the book knows. A plan is *complete* when it removes every order the
venue could hold in scope — including orders the stream has not told us about — or, for a
by-id plan, every order the book knows when the book is trusted (reconciled since the last
connect). Every plan is followed by a verification snapshot, and anything that survives is
planned again in the next round, escalating to bulk verbs from round 2 on.

Rules, in order:

1. Scopes that a bulk verb would overshoot (sides filter, ``cancel_orders`` actions,
   protective stops to keep on a single-plane venue) are cancelled by id only.
2. Sweeps (a few new orders after the trip) are by id: cheapest, fastest.
3. Round 1 with a trusted book and at most ``prefer_by_id_below`` orders: by id (lowest
   latency, e.g. OX.FUN WS on the open socket), followed by verification.
4. Otherwise the cheapest complete candidate among by-id (trusted book only), by-products
   and all-products; ties go to the bulk verb. Candidates that fit the remaining budget
   win over those that do not.
5. Later rounds planned from the venue's own verification snapshot (``snapshot_complete``:
   both planes, taken after the previous round) treat that list as complete: by id or per
   product when cheaper than the all-products verb, and on a two-plane venue the trigger
   plane is planned on its own service (its survivors by id, which costs the wallet
   nothing; no trigger request at all when none survive). Without such a snapshot a later
   round goes wide (all products), since the book evidently missed something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from killswitch.model import CancelScope, OrderInfo, OrderRef
from killswitch.venues.base import VenueCapabilities

CANCEL_ALL = "cancel_all_orders"
CANCEL_PRODUCTS = "cancel_products"
CANCEL_ORDERS = "cancel_orders"


@dataclass(frozen=True, slots=True)
class CancelStep:
    verb: str
    products: tuple[str, ...] = ()
    orders: tuple[OrderRef, ...] = ()
    include_triggers: bool = True
    cost: int = 0


@dataclass(frozen=True, slots=True)
class CancelPlan:
    venue: str
    steps: tuple[CancelStep, ...]
    reason: str
    total_cost: int
    n_known_orders: int

    def describe(self) -> str:
        parts = []
        for s in self.steps:
            if s.verb == CANCEL_ORDERS:
                parts.append(f"{s.verb}({len(s.orders)} ids)")
            elif s.verb == CANCEL_PRODUCTS:
                parts.append(f"{s.verb}({','.join(s.products)})")
            else:
                parts.append(s.verb)
        return f"{' + '.join(parts) or 'nothing'} [cost {self.total_cost}; {self.reason}]"


def _refs(orders: Sequence[OrderInfo]) -> tuple[OrderRef, ...]:
    return tuple(OrderRef(o.venue, o.product, o.venue_order_id, o.is_trigger) for o in orders)


def _needs_by_id(scope: CancelScope, caps: VenueCapabilities, known: Sequence[OrderInfo],
                 all_known: Sequence[OrderInfo]) -> bool:
    if scope.by_id_only or scope.sides is not None:
        return True
    if scope.keep_protective_stops and not caps.has_trigger_plane:
        # A bulk cancel on a single-plane venue would also kill the stops we must keep.
        return any(o.is_trigger and o.reduce_only for o in all_known)
    return False


def plan_cancels(
    *,
    venue: str,
    scope: CancelScope,
    in_scope: Sequence[OrderInfo],
    all_known: Sequence[OrderInfo],
    caps: VenueCapabilities,
    trusted: bool,
    round_no: int,
    budget_available: int | None,
    sweep: bool = False,
    snapshot_complete: bool = False,
) -> CancelPlan:
    """Plan one round. ``in_scope``: known open orders the scope covers; ``all_known``: all.

    ``snapshot_complete``: ``in_scope`` comes from the venue's own open-orders snapshot taken
    after the last round (rule 5).
    """
    if snapshot_complete and round_no > 1 and not sweep and not _needs_by_id(scope, caps, in_scope, all_known):
        return _plan_from_snapshot(venue, scope, in_scope, caps, budget_available)
    n = len(in_scope)
    # Bulk verbs on a two-plane venue can leave the trigger plane alone when stops are kept:
    # protective stops are then handled by id below.
    include_triggers = not (scope.keep_protective_stops and caps.has_trigger_plane)

    def by_id(reason: str) -> CancelPlan:
        refs = _refs(in_scope)
        step = CancelStep(CANCEL_ORDERS, orders=refs, cost=caps.cost_cancel_orders(len(refs)))
        return CancelPlan(venue, (step,) if refs else (), reason, step.cost if refs else 0, n)

    def with_trigger_cleanup(plan: CancelPlan) -> CancelPlan:
        if include_triggers:
            return plan
        # Non-protective trigger orders still go, by id.
        doomed = [o for o in in_scope if o.is_trigger]
        if not doomed:
            return plan
        step = CancelStep(CANCEL_ORDERS, orders=_refs(doomed), cost=caps.cost_cancel_orders(len(doomed)))
        return CancelPlan(venue, plan.steps + (step,), plan.reason, plan.total_cost + step.cost, n)

    if _needs_by_id(scope, caps, in_scope, all_known):
        return by_id("scope allows only by-id cancels")
    if sweep and n:
        return by_id("sweep of orders seen after the trip")
    if round_no == 1 and trusted and 0 < n <= caps.prefer_by_id_below:
        return by_id(f"{n} known orders, trusted book: by id for latency")

    # (cost, bulk_rank, plan or a thunk that builds it): the by-id candidate is only costed
    # here; its order refs (one per known order, thousands on a big book) are built only if
    # it wins.
    candidates: list[tuple[int, int, CancelPlan | Callable[[], CancelPlan]]] = []
    if trusted and n and round_no == 1:
        candidates.append((caps.cost_cancel_orders(n), 2, lambda: by_id("by id: cheapest for the known orders")))
    if scope.products is not None:
        prods = tuple(sorted(scope.products))
        step = CancelStep(CANCEL_PRODUCTS, products=prods, include_triggers=include_triggers,
                          cost=caps.cost_cancel_products(len(prods)))
        candidates.append((step.cost, 1, with_trigger_cleanup(
            CancelPlan(venue, (step,), f"per product for the {len(prods)} products in scope", step.cost, n))))
    else:
        if trusted and n and round_no == 1:  # later rounds: the book evidently missed something, go wide
            prods = tuple(sorted({o.product for o in in_scope}))
            step = CancelStep(CANCEL_PRODUCTS, products=prods, include_triggers=include_triggers,
                              cost=caps.cost_cancel_products(len(prods)))
            candidates.append((step.cost, 1, with_trigger_cleanup(
                CancelPlan(venue, (step,), f"per product for the {len(prods)} products with orders",
                           step.cost, n))))
        step = CancelStep(CANCEL_ALL, include_triggers=include_triggers, cost=caps.cancel_all_cost)
        candidates.append((step.cost, 0, with_trigger_cleanup(
            CancelPlan(venue, (step,), "all products", step.cost, n))))

    def key(c):
        cost, rank, plan = c
        total = plan.total_cost if isinstance(plan, CancelPlan) else cost  # by id: cost is the total
        fits = budget_available is None or total <= budget_available
        return (not fits, cost, rank)

    best = min(candidates, key=key)[2]
    return best if isinstance(best, CancelPlan) else best()


def _plan_from_snapshot(venue: str, scope: CancelScope, in_scope: Sequence[OrderInfo], caps: VenueCapabilities,
                        budget_available: int | None) -> CancelPlan:
    """Rule 5: the venue listed exactly what survives; plan each plane for just that."""
    n = len(in_scope)
    split = caps.has_trigger_plane
    trig = [o for o in in_scope if o.is_trigger] if split else []
    eng = [o for o in in_scope if not o.is_trigger] if split else list(in_scope)
    # Stops kept on a two-plane venue are not in in_scope (the scope filtered them out).
    trig_steps: tuple[CancelStep, ...] = ()
    if trig:
        trig_steps = (CancelStep(CANCEL_ORDERS, orders=_refs(trig), cost=caps.cost_cancel_triggers(len(trig))),)
    trig_cost = sum(s.cost for s in trig_steps)
    if not eng:
        return CancelPlan(venue, trig_steps, "from the verification snapshot: trigger plane only, by id",
                          trig_cost, n)
    candidates: list[tuple[int, int, tuple[CancelStep, ...], str]] = []
    by_id = CancelStep(CANCEL_ORDERS, orders=_refs(eng), cost=caps.cost_cancel_orders(len(eng)))
    candidates.append((by_id.cost, 2, (by_id,), f"from the verification snapshot: {len(eng)} survivors by id"))
    prods = tuple(sorted({o.product for o in eng}))
    if scope.products is None or set(prods) <= set(scope.products):
        step = CancelStep(CANCEL_PRODUCTS, products=prods, include_triggers=False,
                          cost=caps.cost_cancel_products(len(prods)))
        candidates.append((step.cost, 1, (step,),
                           f"from the verification snapshot: per product for the {len(prods)} products with survivors"))
    if scope.products is None:
        step = CancelStep(CANCEL_ALL, include_triggers=False, cost=caps.cancel_all_cost)
        candidates.append((step.cost, 0, (step,), "from the verification snapshot: all products"))

    def key(c):
        cost, rank, _, _ = c
        fits = budget_available is None or cost + trig_cost <= budget_available
        return (not fits, cost, rank)

    cost, _, steps, reason = min(candidates, key=key)
    if not split:
        steps = tuple(CancelStep(s.verb, s.products, s.orders, True, s.cost) for s in steps)
    return CancelPlan(venue, steps + trig_steps, reason, cost + trig_cost, n)
