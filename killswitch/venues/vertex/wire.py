"""Pure codecs for the Vertex/Nado gateway, trigger service and subscription streams.

Encoders build the exact JSON bodies (same bytes on WS and REST); parsers turn frames into
small typed records and raise only :class:`WireError`; ``to_events`` maps stream records
onto :mod:`killswitch.model` events. No I/O, no clocks: callers pass times in.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any, Sequence

import orjson

from killswitch.model import (
    CashFlowObserved,
    CloseReason,
    OrderClosed,
    OrderFilled,
    OrderInfo,
    OrderOpened,
    PositionObserved,
    Side,
)

X18 = Decimal(10**18)
# int128 has 39 digits: a wide context makes the x18 division exact (the default 28 would round).
_EXACT = Context(prec=80)
QUOTE_PRODUCT_ID = 0
CASH_FLOW_REASONS = frozenset({"deposit_collateral", "withdraw_collateral", "transfer_quote"})

# Error codes the session acts on (doc §8).
RATE_LIMIT_CODES = frozenset({1000, 1015})
MAINTENANCE_CODES = frozenset({1004, 2068})
LATE_EARLY_CODES = frozenset({2011, 2012})
AUTH_CODES = frozenset({2027, 2028, 2029, 2034, 2035})
ORDER_NOT_FOUND = 2020
INVALID_NONCE = 2022  # tx_nonce mismatch (link_signer): re-query ``nonces`` and sign again
INSUFFICIENT_ACCOUNT_VALUE = 2025  # enabling a linked signer needs >= 5 USDT0 of account value
LINK_SIGNER_LIMIT = 2030  # 50 link_signer per 7 days per subaccount: "wait for {wait_time} seconds"
ZERO_ADDRESS = "0x" + "00" * 20
COMPRESSION_REQUIRED = 2080


class WireError(ValueError):
    """A frame that does not have the documented shape."""


def x18_to_decimal(value: int) -> Decimal:
    return _EXACT.divide(Decimal(value), X18)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def hex0x(raw: bytes) -> str:
    return "0x" + raw.hex()


# ---------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------


def encode_cancel_product_orders(sender: bytes, product_ids: Sequence[int], nonce: int, signature: bytes) -> bytes:
    # digest is omitted, as the SDKs do (the server recomputes it).
    tx = {"sender": hex0x(sender), "productIds": list(product_ids), "nonce": str(nonce)}
    return dumps({"cancel_product_orders": {"tx": tx, "signature": hex0x(signature)}})


def encode_cancel_orders(
    sender: bytes, product_ids: Sequence[int], digests: Sequence[bytes], nonce: int, signature: bytes
) -> bytes:
    tx = {
        "sender": hex0x(sender),
        "productIds": list(product_ids),
        "digests": [hex0x(d) for d in digests],
        "nonce": str(nonce),
    }
    return dumps({"cancel_orders": {"tx": tx, "signature": hex0x(signature)}})


@dataclass(frozen=True, slots=True)
class OrderTx:
    sender: bytes
    price_x18: int
    amount: int  # signed x18: + bid, - ask
    expiration: int
    nonce: int
    appendix: int | None = None  # Nado only

    def to_json(self) -> dict:
        d = {
            "sender": hex0x(self.sender),
            "priceX18": str(self.price_x18),
            "amount": str(self.amount),
            "expiration": str(self.expiration),
            "nonce": str(self.nonce),
        }
        if self.appendix is not None:
            d["appendix"] = str(self.appendix)
        return d


def encode_place_order(product_id: int, order: OrderTx, signature: bytes, *, request_id: int | None = None) -> bytes:
    body: dict[str, Any] = {"product_id": product_id, "order": order.to_json(), "signature": hex0x(signature)}
    if request_id is not None:
        body["id"] = request_id
    return dumps({"place_order": body})


def encode_link_signer(sender: bytes, signer: bytes, nonce: int, signature: bytes) -> bytes:
    """``signer`` is bytes32 (address then 12 zero bytes); all zeros revokes the current one."""
    return dumps({"link_signer": {"tx": {"sender": hex0x(sender), "signer": hex0x(signer), "nonce": str(nonce)},
                                  "signature": hex0x(signature)}})


def encode_query(query_type: str, **params: Any) -> bytes:
    return dumps({"type": query_type, **params})


def encode_list_trigger_orders(
    sender: bytes, recv_time_ms: int, signature: bytes, *, product_id: int | None = None, pending: bool = True
) -> bytes:
    body: dict[str, Any] = {
        "type": "list_trigger_orders",
        "tx": {"sender": hex0x(sender), "recvTime": str(recv_time_ms)},
        "signature": hex0x(signature),
        "pending": pending,
    }
    if product_id is not None:
        body["product_id"] = product_id
    return dumps(body)


def encode_authenticate(sender: bytes, expiration_ms: int, signature: bytes, request_id: int) -> bytes:
    return dumps(
        {
            "method": "authenticate",
            "id": request_id,
            "tx": {"sender": hex0x(sender), "expiration": str(expiration_ms)},
            "signature": hex0x(signature),
        }
    )


def encode_subscribe(stream_type: str, subaccount: bytes, product_id: int | None, request_id: int) -> bytes:
    stream: dict[str, Any] = {"type": stream_type, "subaccount": hex0x(subaccount)}
    if product_id is not None:
        stream["product_id"] = product_id
    return dumps({"method": "subscribe", "stream": stream, "id": request_id})


# ---------------------------------------------------------------------------------------
# Field helpers (all raise WireError)
# ---------------------------------------------------------------------------------------


def loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise WireError(f"not JSON: {exc}") from None


def _obj(v: Any, what: str) -> dict:
    if not isinstance(v, dict):
        raise WireError(f"{what}: expected object")
    return v


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool):
        raise WireError(f"{what}: expected integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s[:1] in "+-" and s[1:].isdigit() or s.isdigit():
            if len(s) > 80:
                raise WireError(f"{what}: integer too long")
            return int(s)
    raise WireError(f"{what}: expected integer or decimal string")


def _opt_int(d: dict, key: str) -> int | None:
    v = d.get(key)
    return None if v is None else _int(v, key)


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str):
        raise WireError(f"{what}: expected string")
    return v


def _digest(v: Any, what: str = "digest") -> str:
    s = _str(v, what).lower()
    if len(s) != 66 or not s.startswith("0x"):
        raise WireError(f"{what}: expected 32-byte 0x-hex")
    try:
        bytes.fromhex(s[2:])
    except ValueError:
        raise WireError(f"{what}: not hex") from None
    return s


def _list(v: Any, what: str) -> list:
    if not isinstance(v, list):
        raise WireError(f"{what}: expected list")
    return v


def ts_ns_to_ms(v: Any) -> int:
    return _int(v, "timestamp") // 1_000_000


# ---------------------------------------------------------------------------------------
# Gateway / trigger responses
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayResponse:
    ok: bool
    request_type: str
    data: Any = None
    error_code: int | None = None
    error: str = ""
    id: int | None = None


def parse_response(obj: Any) -> GatewayResponse:
    d = _obj(obj, "response")
    status = d.get("status")
    if status not in ("success", "failure"):
        raise WireError("response: status must be success|failure")
    rt = d.get("request_type", "")
    if not isinstance(rt, str):
        raise WireError("response: request_type must be a string")
    rid = _opt_int(d, "id")
    if status == "success":
        return GatewayResponse(True, rt, d.get("data"), id=rid)
    code = d.get("error_code")
    code_i = None if code is None else _int(code, "error_code")
    err = d.get("error", "")
    return GatewayResponse(False, rt, None, code_i, err if isinstance(err, str) else str(err), rid)


def parse_response_bytes(raw: bytes | str) -> GatewayResponse:
    return parse_response(loads(raw))


@dataclass(frozen=True, slots=True)
class WireOrder:
    product_id: int
    digest: str
    price_x18: int
    amount: int  # signed original amount
    unfilled_amount: int  # signed
    placed_at: int = 0
    appendix: int | None = None

    def to_info(self, venue: str, *, is_trigger: bool = False) -> OrderInfo:
        side = Side.BUY if self.amount > 0 else Side.SELL if self.amount < 0 else None
        reduce_only = bool(self.appendix is not None and self.appendix & (1 << 11))
        return OrderInfo(
            venue=venue,
            product=str(self.product_id),
            venue_order_id=self.digest,
            side=side,
            price=x18_to_decimal(self.price_x18),
            qty_remaining=abs(x18_to_decimal(self.unfilled_amount)),
            is_trigger=is_trigger,
            reduce_only=reduce_only,
            ts_event_ms=self.placed_at * 1000,
        )


def parse_order(obj: Any) -> WireOrder:
    d = _obj(obj, "order")
    amount = _int(d.get("amount"), "amount")
    unfilled = d.get("unfilled_amount")
    return WireOrder(
        product_id=_int(d.get("product_id"), "product_id"),
        digest=_digest(d.get("digest")),
        price_x18=_int(d.get("price_x18", d.get("priceX18")), "price_x18"),
        amount=amount,
        unfilled_amount=amount if unfilled is None else _int(unfilled, "unfilled_amount"),
        placed_at=_opt_int(d, "placed_at") or 0,
        appendix=_opt_int(d, "appendix"),
    )


def parse_cancelled_orders(data: Any) -> tuple[str, ...]:
    """Digests from a cancel response's ``data`` (the trigger service may send no data).

    Only each order's digest is read (and validated): a trip's cancel_product_orders answers
    with every cancelled order (1000 per subaccount in the scale benchmark), the rest of
    their fields is not used (flat comes from a snapshot), and parsing them fully cost
    ~15 ms per reply on the event loop while other venues' cancels waited to be sent."""
    if data is None:
        return ()
    d = _obj(data, "data")
    return tuple(_digest(_obj(o, "cancelled_orders[]").get("digest"))
                 for o in _list(d.get("cancelled_orders", []), "cancelled_orders"))


def parse_orders_query(data: Any) -> list[WireOrder]:
    """``orders`` ({product_orders:[{orders}]}) or ``subaccount_orders`` ({orders}) data."""
    d = _obj(data, "data")
    out: list[WireOrder] = []
    if "product_orders" in d:
        for po in _list(d["product_orders"], "product_orders"):
            out.extend(parse_order(o) for o in _list(_obj(po, "product_orders[]").get("orders"), "orders"))
    else:
        out.extend(parse_order(o) for o in _list(d.get("orders"), "orders"))
    return out


def parse_trigger_orders(data: Any) -> list[WireOrder]:
    """Trigger service ``list_trigger_orders``: items wrap the order next to its digest."""
    d = _obj(data, "data")
    out = []
    for item in _list(d.get("orders"), "orders"):
        it = _obj(item, "trigger order")
        inner = _obj(it.get("order"), "trigger order.order")
        order = inner.get("order") if isinstance(inner.get("order"), dict) else inner
        digest = it.get("digest", inner.get("digest"))
        pid = it.get("product_id", inner.get("product_id"))
        amount = _int(order.get("amount"), "amount")
        out.append(
            WireOrder(
                product_id=_int(pid, "product_id"),
                digest=_digest(digest),
                price_x18=_int(order.get("priceX18", order.get("price_x18")), "priceX18"),
                amount=amount,
                unfilled_amount=amount,
                placed_at=(_opt_int(it, "updated_at") or 0),
                appendix=_opt_int(order, "appendix"),
            )
        )
    return out


def parse_contracts(data: Any) -> tuple[int, str, tuple[str, ...]]:
    d = _obj(data, "contracts")
    books = tuple(_str(b, "book_addrs[]").lower() for b in _list(d.get("book_addrs", []), "book_addrs"))
    return _int(d.get("chain_id"), "chain_id"), _str(d.get("endpoint_addr"), "endpoint_addr").lower(), books


def parse_linked_signer(data: Any) -> str:
    """``linked_signer`` query: the lowercase 20-byte address (``ZERO_ADDRESS`` = none)."""
    v = _str(_obj(data, "linked_signer").get("linked_signer"), "linked_signer").lower()
    if not v.startswith("0x") or len(v) != 42:
        raise WireError("linked_signer: expected a 0x-prefixed 20-byte address")
    try:
        bytes.fromhex(v[2:])
    except ValueError:
        raise WireError("linked_signer: not hex") from None
    return v


def parse_tx_nonce(data: Any) -> int:
    """``nonces`` query: the wallet's ``tx_nonce`` (the next one an execute must carry)."""
    return _int(_obj(data, "nonces").get("tx_nonce"), "tx_nonce")


@dataclass(frozen=True, slots=True)
class LinkSignerBudget:
    """Archive ``linked_signer_rate_limit``: link_signer requests left in the 7-day window."""

    remaining: int
    wait_time_s: int
    total: int


def parse_link_signer_rate_limit(data: Any) -> LinkSignerBudget:
    d = _obj(data, "linked_signer_rate_limit")
    return LinkSignerBudget(_int(d.get("remaining_tx"), "remaining_tx"), _int(d.get("wait_time", 0), "wait_time"),
                            _int(d.get("total_tx_limit"), "total_tx_limit"))


def parse_all_products(data: Any) -> tuple[int, ...]:
    d = _obj(data, "all_products")
    ids = []
    for key in ("spot_products", "perp_products"):
        for p in _list(d.get(key, []), key):
            ids.append(_int(_obj(p, key).get("product_id"), "product_id"))
    return tuple(sorted(set(ids)))


@dataclass(frozen=True, slots=True)
class SubaccountInfo:
    equity_x18: int  # healths[2].health: unweighted health = mark-to-oracle equity
    maintenance_x18: int
    balances_x18: dict  # product_id -> amount x18
    oracle_x18: dict  # product_id -> oracle price x18

    @property
    def equity(self) -> Decimal:
        return x18_to_decimal(self.equity_x18)


def parse_subaccount_info(data: Any) -> SubaccountInfo:
    d = _obj(data, "subaccount_info")
    healths = _list(d.get("healths"), "healths")
    if len(healths) < 3:
        raise WireError("healths: expected 3 entries")
    bal: dict[int, int] = {}
    for key in ("spot_balances", "perp_balances"):
        for b in _list(d.get(key, []), key):
            b = _obj(b, key)
            bal[_int(b.get("product_id"), "product_id")] = _int(_obj(b.get("balance"), "balance").get("amount"), "amount")
    oracle: dict[int, int] = {}
    for key in ("spot_products", "perp_products"):
        for p in _list(d.get(key, []), key):
            p = _obj(p, key)
            oracle[_int(p.get("product_id"), "product_id")] = _int(p.get("oracle_price_x18"), "oracle_price_x18")
    return SubaccountInfo(
        equity_x18=_int(_obj(healths[2], "healths[2]").get("health"), "health"),
        maintenance_x18=_int(_obj(healths[1], "healths[1]").get("health"), "health"),
        balances_x18=bal,
        oracle_x18=oracle,
    )


# ---------------------------------------------------------------------------------------
# Subscription stream
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamReply:
    id: int | None
    error: str | None
    result: Any = None


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    ts_ms: int
    product_id: int
    digest: str
    amount: int
    reason: str


@dataclass(frozen=True, slots=True)
class Fill:
    ts_ms: int
    product_id: int
    digest: str
    filled_qty: int
    remaining_qty: int
    price_x18: int
    is_bid: bool


@dataclass(frozen=True, slots=True)
class PositionChange:
    ts_ms: int
    product_id: int
    amount: int  # new absolute position x18
    v_quote_amount: int
    reason: str


@dataclass(frozen=True, slots=True)
class OtherStream:
    type: str


StreamMessage = StreamReply | OrderUpdate | Fill | PositionChange | OtherStream


def parse_stream(obj: Any) -> StreamMessage:
    d = _obj(obj, "stream frame")
    t = d.get("type")
    if t is None:
        if "id" not in d and "result" not in d and "error" not in d:
            raise WireError("stream frame: neither event nor reply")
        err = d.get("error")
        return StreamReply(_opt_int(d, "id"), None if err is None else str(err), d.get("result"))
    t = _str(t, "type")
    if t == "order_update":
        reason = _str(d.get("reason"), "reason")
        return OrderUpdate(
            ts_ns_to_ms(d.get("timestamp")), _int(d.get("product_id"), "product_id"),
            _digest(d.get("digest")), _int(d.get("amount"), "amount"), reason,
        )
    if t == "fill":
        is_bid = d.get("is_bid")
        if not isinstance(is_bid, bool):
            raise WireError("fill: is_bid must be a boolean")
        return Fill(
            ts_ns_to_ms(d.get("timestamp")), _int(d.get("product_id"), "product_id"),
            _digest(d.get("order_digest"), "order_digest"), _int(d.get("filled_qty"), "filled_qty"),
            _int(d.get("remaining_qty"), "remaining_qty"), _int(d.get("price"), "price"), is_bid,
        )
    if t == "position_change":
        reason = d.get("reason", "")
        return PositionChange(
            ts_ns_to_ms(d.get("timestamp")), _int(d.get("product_id"), "product_id"),
            _int(d.get("amount"), "amount"), _int(d.get("v_quote_amount", 0), "v_quote_amount"),
            reason if isinstance(reason, str) else "",
        )
    return OtherStream(t)


def parse_stream_bytes(raw: bytes | str) -> StreamMessage:
    return parse_stream(loads(raw))


class PositionTracker:
    """Last known balance and oracle price per product, to turn deposit/withdraw
    ``position_change`` events (which carry the *new* amount) into signed cash flows."""

    __slots__ = ("amounts_x18", "oracle_x18")

    def __init__(self) -> None:
        self.amounts_x18: dict[int, int] = {}
        self.oracle_x18: dict[int, int] = {QUOTE_PRODUCT_ID: 10**18}

    def seed(self, info: SubaccountInfo) -> None:
        self.amounts_x18.update(info.balances_x18)
        self.oracle_x18.update(info.oracle_x18)
        self.oracle_x18[QUOTE_PRODUCT_ID] = self.oracle_x18.get(QUOTE_PRODUCT_ID, 10**18)

    def cash_flow(self, pc: PositionChange) -> Decimal | None:
        prev = self.amounts_x18.get(pc.product_id)
        self.amounts_x18[pc.product_id] = pc.amount
        if pc.reason not in CASH_FLOW_REASONS or prev is None:
            return None
        oracle = self.oracle_x18.get(pc.product_id)
        if oracle is None:
            return None
        return x18_to_decimal(pc.amount - prev) * x18_to_decimal(oracle)


def to_events(msg: StreamMessage, *, venue: str, ts_recv_s: float, tracker: PositionTracker | None = None) -> list:
    """Model events for one stream message; [] for replies and streams we do not map."""
    if isinstance(msg, OrderUpdate):
        pid = str(msg.product_id)
        if msg.reason == "placed":
            side = Side.BUY if msg.amount > 0 else Side.SELL if msg.amount < 0 else None
            info = OrderInfo(venue, pid, msg.digest, side=side, qty_remaining=abs(x18_to_decimal(msg.amount)),
                             ts_event_ms=msg.ts_ms)
            return [OrderOpened(info, ts_recv_s=ts_recv_s)]
        if msg.amount == 0 and msg.reason in ("cancelled", "filled"):
            reason = CloseReason.CANCELED if msg.reason == "cancelled" else CloseReason.FILLED
            return [OrderClosed(venue, pid, msg.digest, reason, msg.ts_ms, ts_recv_s)]
        return []
    if isinstance(msg, Fill):
        return [
            OrderFilled(
                venue, str(msg.product_id), msg.digest, Side.BUY if msg.is_bid else Side.SELL,
                abs(x18_to_decimal(msg.filled_qty)), x18_to_decimal(msg.price_x18),
                abs(x18_to_decimal(msg.remaining_qty)), msg.ts_ms, ts_recv_s,
            )
        ]
    if isinstance(msg, PositionChange):
        out: list = []
        flow = tracker.cash_flow(msg) if tracker is not None else None
        if flow is not None and flow != 0:
            out.append(CashFlowObserved(venue, flow, "USD", msg.ts_ms, ts_recv_s))
        if msg.product_id != QUOTE_PRODUCT_ID:
            out.append(PositionObserved(venue, str(msg.product_id), x18_to_decimal(msg.amount),
                                        ts_event_ms=msg.ts_ms, ts_recv_s=ts_recv_s))
        return out
    return []
