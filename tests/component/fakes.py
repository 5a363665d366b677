"""A fake venue session with an in-memory order book, and a tiny rule, for engine tests.

The fake is strict where it matters to the engine: it only removes orders it holds, can be
told to fail (unknown outcome / rate limit / drop the verify), and emits OrderClosed pushes
on the event channel as a venue would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import trio

from killswitch.model import (
    Breach, CancelAttempted, CancelCompleted, CancelScope, CloseReason, EquityObserved,
    OpenOrdersSnapshot, OrderClosed, OrderInfo, OrderOpened, VenueConnected,
)
from killswitch.venues.base import OutcomeUnknown, VenueCapabilities

NADO_LIKE = VenueCapabilities(cancel_all_cost=50, cancel_products_cost_per_product=5,
                              cancel_orders_cost_per_request=0, cancel_orders_cost_per_order=1,
                              max_orders_per_request=100, has_trigger_plane=True)
OX_LIKE = VenueCapabilities(cancel_all_cost=1, cancel_products_cost_per_product=1,
                            cancel_orders_cost_per_request=1, cancel_orders_cost_per_order=0,
                            max_orders_per_request=20, has_trigger_plane=False, prefer_by_id_below=100)


class FakeSession:
    def __init__(self, name: str, caps: VenueCapabilities = OX_LIKE) -> None:
        self.name = name
        self.capabilities = caps
        self.orders: dict[str, OrderInfo] = {}
        self.send: trio.MemorySendChannel | None = None
        self.calls: list[tuple[str, tuple]] = []
        self.fail_cancels = 0  # next N cancel requests: unknown outcome, nothing removed
        self.fail_verifies = 0
        self.ignore_cancels = False  # venue acks but keeps the orders (e.g. lost race)
        self.cancel_delay_s = 0.0
        self.sent_times: list[float] = []
        self._seq = 0

    def add(self, product: str, n: int = 1, *, is_trigger=False, reduce_only=False, side=None) -> list[OrderInfo]:
        out = []
        for _ in range(n):
            self._seq += 1
            o = OrderInfo(self.name, product, f"{self.name}-{self._seq}", is_trigger=is_trigger,
                          reduce_only=reduce_only, side=side)
            self.orders[o.venue_order_id] = o
            out.append(o)
        return out

    async def push_new(self, product: str, n: int = 1, **kw) -> list[OrderInfo]:
        orders = self.add(product, n, **kw)
        for o in orders:
            await self.send.send(OrderOpened(o, ts_recv_s=trio.current_time()))
        return orders

    async def run(self, send, *, task_status=trio.TASK_STATUS_IGNORED):
        self.send = send
        await send.send(OpenOrdersSnapshot(self.name, tuple(self.orders.values()), None, "reconcile"))
        await send.send(VenueConnected(self.name))
        task_status.started()
        await trio.sleep_forever()

    async def _cancel(self, verb, ids, on_sent, trip_id, products=()):
        self._seq += 1
        rid = f"r{self._seq}"
        now = trio.current_time()
        self.sent_times.append(now)
        on_sent(CancelAttempted(self.name, trip_id, verb, rid, len(ids), tuple(products), {"nonce": self._seq},
                                ts_sent_s=now))
        self.calls.append((verb, tuple(products) or tuple(ids)))
        if self.cancel_delay_s:
            await trio.sleep(self.cancel_delay_s)
        if self.fail_cancels:
            self.fail_cancels -= 1
            return [CancelCompleted(self.name, trip_id, verb, rid, "unknown", message="socket closed (1006)")]
        cancelled = []
        if not self.ignore_cancels:
            for oid in ids:
                o = self.orders.pop(oid, None)
                if o is not None:
                    cancelled.append(oid)
                    await self.send.send(OrderClosed(self.name, o.product, oid, CloseReason.CANCELED))
        return [CancelCompleted(self.name, trip_id, verb, rid, "ok", cancelled_ids=tuple(cancelled))]

    async def cancel_orders(self, orders, *, trip_id, on_sent):
        return await self._cancel("cancel_orders", [o.venue_order_id for o in orders], on_sent, trip_id)

    async def cancel_products(self, products, *, include_triggers, trip_id, on_sent):
        ids = [o.venue_order_id for o in self.orders.values()
               if o.product in products and (include_triggers or not o.is_trigger)]
        return await self._cancel("cancel_products", ids, on_sent, trip_id, products)

    async def cancel_all_orders(self, *, include_triggers, trip_id, on_sent):
        ids = [o.venue_order_id for o in self.orders.values() if include_triggers or not o.is_trigger]
        return await self._cancel("cancel_all_orders", ids, on_sent, trip_id)

    async def fetch_open_orders(self):
        await trio.sleep(0)
        if self.fail_verifies:
            self.fail_verifies -= 1
            raise OutcomeUnknown("timeout", venue=self.name)
        return tuple(self.orders.values())

    def budget_available(self, now_s):
        return None


@dataclass
class EquityFloorRule:
    """Trips when equity < floor; raises when told to (fail-closed test)."""

    name: str
    floor: Decimal
    scope: CancelScope = field(default_factory=CancelScope)
    latch: bool = True
    explode: bool = False
    kind: str = "test_floor"
    watches: frozenset = frozenset({EquityObserved})
    needs_tick: bool = False

    @property
    def action_scope(self):
        return self.scope

    def on_event(self, ev, book, now_s):
        if self.explode:
            raise ZeroDivisionError("boom")
        if ev.equity < self.floor:
            return Breach(self.name, self.kind, str(ev.equity), f"< {self.floor}", self.scope, self.latch)
        return None

    def on_tick(self, book, now_s):
        return None

    def status(self, book, now_s):
        from killswitch.rules.base import RuleStatus
        return RuleStatus(self.name, self.kind, "-", str(self.floor))
