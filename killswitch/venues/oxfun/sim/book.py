"""Pure state of the simulated OX.FUN exchange: accounts, orders, balances, positions, marks.

No I/O: the trio shell in ``sim.py`` calls these methods and fans the returned push
payloads out to sockets. Payload builders produce the venue's field names and string
numbers (oxfun.md §5).
"""

from __future__ import annotations

import secrets as _secrets
from dataclasses import dataclass, field
from decimal import Decimal


ORDER_ID_BASE = 1_000_000_000_000  # 13-digit numeric ids, like the venue's


def fmt(d: Decimal | None) -> str:
    if d is None:
        return "0"
    text = format(d, "f")
    return text


@dataclass
class SimOrder:
    order_id: str
    market: str
    side: str  # BUY | SELL
    order_type: str  # LIMIT | MARKET | STOP_LIMIT | STOP_MARKET
    price: Decimal | None
    qty: Decimal
    remain: Decimal
    time_in_force: str = "GTC"
    stop_price: Decimal | None = None
    client_order_id: str | None = None
    is_triggered: bool = True
    created_ms: int = 0
    modified_ms: int = 0
    source: int = 13


@dataclass
class SimPosition:
    qty: Decimal
    entry_price: Decimal


@dataclass
class AccountCounters:
    cancels_received: int = 0  # cancel elements (WS) received
    cancel_frames: list = field(default_factory=list)  # (trio time, tag, n elements)
    cancel_acks_ok: int = 0
    rejects_sent: int = 0
    async_rejects_sent: int = 0
    orders_placed: int = 0
    orders_cancelled: int = 0
    orders_filled: int = 0
    logins_ok: int = 0
    logins_failed: int = 0
    rest_requests: int = 0
    rest_cancel_all: int = 0
    rest_cancel: int = 0


@dataclass
class SimAccount:
    api_key: str
    api_secret: str
    account_id: str
    balances: dict[str, Decimal] = field(default_factory=dict)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    orders: dict[str, SimOrder] = field(default_factory=dict)
    counters: AccountCounters = field(default_factory=AccountCounters)


def new_key_pair() -> tuple[str, str]:
    return "k-" + _secrets.token_hex(12), _secrets.token_urlsafe(24)


def order_payload(acct: SimAccount, o: SimOrder, notice: str, status: str, ts_ms: int, **extra) -> dict:
    d = {
        "accountId": acct.account_id,
        "orderId": o.order_id,
        "price": fmt(o.price),
        "quantity": fmt(o.qty),
        "amount": "0.0",
        "side": o.side,
        "status": status,
        "marketCode": o.market,
        "timeInForce": o.time_in_force,
        "timestamp": str(ts_ms),
        "remainQuantity": fmt(o.remain),
        "limitPrice": fmt(o.price),
        "notice": notice,
        "orderType": o.order_type,
        "isTriggered": "true" if o.is_triggered else "false",
        "displayQuantity": fmt(o.qty),
    }
    if o.client_order_id is not None:
        d["clientOrderId"] = o.client_order_id
    if o.stop_price is not None:
        d["stopPrice"] = fmt(o.stop_price)
        d["triggerType"] = "MARK_PRICE"
    d.update(extra)
    return d


def rest_order_payload(o: SimOrder) -> dict:
    d = {
        "orderId": o.order_id,
        "marketCode": o.market,
        "status": "OPEN" if o.remain == o.qty else "PARTIALLY_FILLED",
        "side": o.side,
        "price": fmt(o.price),
        "isTriggered": o.is_triggered,
        "quantity": fmt(o.qty),
        "remainQuantity": fmt(o.remain),
        "matchedQuantity": fmt(o.qty - o.remain),
        "orderType": o.order_type,
        "timeInForce": o.time_in_force,
        "source": str(o.source),
        "createdAt": str(o.created_ms),
        "lastModifiedAt": str(o.modified_ms),
    }
    if o.client_order_id is not None:
        d["clientOrderId"] = o.client_order_id
    if o.stop_price is not None:
        d["stopPrice"] = fmt(o.stop_price)
        d["triggerType"] = "MARK_PRICE"
    return d


def position_pnl(pos: SimPosition, mark: Decimal | None) -> Decimal:
    if mark is None:
        return Decimal(0)
    return pos.qty * (mark - pos.entry_price)


def apply_fill(acct: SimAccount, market: str, side: str, qty: Decimal, price: Decimal) -> Decimal:
    """Update the position for a fill; returns realised PnL (credited in OX)."""
    signed = qty if side == "BUY" else -qty
    pos = acct.positions.get(market)
    if pos is None or pos.qty == 0:
        acct.positions[market] = SimPosition(signed, price)
        return Decimal(0)
    realised = Decimal(0)
    if (pos.qty > 0) == (signed > 0):
        new_qty = pos.qty + signed
        pos.entry_price = (pos.entry_price * pos.qty + price * signed) / new_qty
        pos.qty = new_qty
        return realised
    closed = min(abs(signed), abs(pos.qty))
    direction = Decimal(1) if pos.qty > 0 else Decimal(-1)
    realised = closed * (price - pos.entry_price) * direction
    new_qty = pos.qty + signed
    if new_qty == 0:
        del acct.positions[market]
    elif (new_qty > 0) == (pos.qty > 0):
        pos.qty = new_qty
    else:
        acct.positions[market] = SimPosition(new_qty, price)
    return realised


def crosses(side: str, price: Decimal | None, mark: Decimal | None) -> bool:
    if price is None or mark is None:
        return False
    return price >= mark if side == "BUY" else price <= mark


def stop_triggers(side: str, stop_price: Decimal | None, mark: Decimal | None) -> bool:
    if stop_price is None or mark is None:
        return False
    return mark >= stop_price if side == "BUY" else mark <= stop_price
