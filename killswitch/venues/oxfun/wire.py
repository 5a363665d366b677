"""OX.FUN wire layer: signing, frame encoders and the frame parser. Pure: no I/O, no awaits.

The session (``session.py``) owns sockets and time; everything here takes ``now`` / the
frame text as arguments so it can be tested table-driven and fuzzed.

``parse_frame`` never raises: a malformed or unexpected frame becomes a :class:`BadFrame`
event (internally the helpers raise :class:`WireError`, which ``parse_frame`` converts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlencode

import orjson

from killswitch.model import (
    BadFrame,
    CloseReason,
    MarkPriceObserved,
    OrderClosed,
    OrderFilled,
    OrderInfo,
    OrderOpened,
    OrderRef,
    OrderRejected,
    PositionObserved,
    Side,
)

LOGIN_PATH_SUFFIX = "GET/auth/self/verify"
# The venue rejects frames above "message length validation" (~20 orders x ~200 chars);
# we stay below with a margin so a batch never bounces with 20027.
MAX_FRAME_CHARS = 4000
FRAME_MARGIN_CHARS = 200
MAX_ORDERS_PER_BATCH = 20
MAX_TAG_CHARS = 31  # the venue wants tag length < 32
PING = "ping"
PONG = "pong"

_ORDER_ID_RE = re.compile(r"[0-9]{1,20}")
_MARKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_ASSET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,19}")
_CODE_RE = re.compile(r"[0-9A-Za-z_-]{1,16}")
_SAMPLE_CHARS = 160


class WireError(Exception):
    """A frame or payload that does not have the expected shape."""


# --------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------


def _b64_hmac(secret: str, msg: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), msg.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def login_signature(secret: str, timestamp_ms: str) -> str:
    """base64(HMAC-SHA256(secret, timestamp + "GET/auth/self/verify"))."""
    return _b64_hmac(secret, f"{timestamp_ms}{LOGIN_PATH_SUFFIX}")


def rest_timestamp(wall_ms: int) -> str:
    """``YYYY-MM-DDThh:mm:ss`` in UTC, no milliseconds, no ``Z`` (what the venue signs)."""
    return datetime.fromtimestamp(wall_ms // 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def parse_rest_timestamp(text: str) -> int:
    """Inverse of :func:`rest_timestamp` (ms). Raises WireError."""
    try:
        dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    except (ValueError, TypeError):
        raise WireError("bad REST timestamp") from None
    return int(dt.timestamp()) * 1000


def rest_sign_payload(timestamp: str, nonce: str, verb: str, host: str, path: str, body: str) -> str:
    return f"{timestamp}\n{nonce}\n{verb.upper()}\n{host}\n{path}\n{body}"


def rest_signature(secret: str, timestamp: str, nonce: str, verb: str, host: str, path: str, body: str) -> str:
    return _b64_hmac(secret, rest_sign_payload(timestamp, nonce, verb, host, path, body))


def rest_headers(
    *, api_key: str, secret: str, timestamp: str, nonce: str, verb: str, host: str, path: str, body: str
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "AccessKey": api_key,
        "Timestamp": timestamp,
        "Signature": rest_signature(secret, timestamp, nonce, verb, host, path, body),
        "Nonce": nonce,
    }


def encode_query(params: Mapping[str, Any] | None) -> str:
    """GET query string, keys sorted (what the official client does), ``None`` values dropped."""
    if not params:
        return ""
    return urlencode(sorted((k, str(v)) for k, v in params.items() if v is not None))


def encode_json_body(obj: Any) -> str:
    """Compact JSON, exactly the bytes that are both signed and sent."""
    return orjson.dumps(obj).decode("utf-8")


# --------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------


class TagCounter:
    """Tags unique per connection and < 32 chars: a short prefix plus a counter."""

    __slots__ = ("_prefix", "_n")

    def __init__(self, prefix: str = "k") -> None:
        if len(prefix) > 8:
            raise ValueError("tag prefix too long")
        self._prefix = prefix
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n}"


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode("utf-8")


def _server_ms(frame: dict) -> int | None:
    """A reply's ``timestamp`` (ms, string or number) or None: used only for the clock offset."""
    v = frame.get("timestamp")
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and v > 0:
        return v
    if isinstance(v, str) and v.isdigit() and len(v) <= 16:
        return int(v)
    return None


TIMESTAMP_CODES = frozenset({"20024", "100015"})  # timestamp outside the window, recvWindow expired


def encode_login(api_key: str, secret: str, timestamp_ms: int | str, tag: str) -> str:
    ts = str(timestamp_ms)
    return _dumps(
        {
            "op": "login",
            "tag": tag,
            "data": {"apiKey": api_key, "timestamp": ts, "signature": login_signature(secret, ts)},
        }
    )


def encode_subscribe(channels: Sequence[str], tag: str) -> str:
    return _dumps({"op": "subscribe", "tag": tag, "args": list(channels)})


def private_channels() -> tuple[str, ...]:
    return ("order:all", "balance:all", "position:all")


def ticker_channel(market: str) -> str:
    return f"ticker:{market}"


def _cancel_item(ref: OrderRef) -> dict[str, str]:
    return {"marketCode": ref.product, "orderId": ref.venue_order_id}


def encode_cancelorder(ref: OrderRef, tag: str) -> str:
    return _dumps({"op": "cancelorder", "tag": tag, "data": _cancel_item(ref)})


def encode_cancelorders(refs: Sequence[OrderRef], tag: str) -> str:
    return _dumps({"op": "cancelorders", "tag": tag, "dataArray": [_cancel_item(r) for r in refs]})


def split_cancel_batches(
    refs: Sequence[OrderRef],
    *,
    max_orders: int = MAX_ORDERS_PER_BATCH,
    max_chars: int = MAX_FRAME_CHARS - FRAME_MARGIN_CHARS,
    tag_chars: int = MAX_TAG_CHARS,
) -> list[tuple[OrderRef, ...]]:
    """Greedy split into batches of <= ``max_orders`` whose encoded frame (with the longest
    possible tag) stays under ``max_chars``. A single order that cannot fit is an error
    (it would be rejected by the venue anyway)."""
    envelope = len(encode_cancelorders((), "x" * tag_chars))
    batches: list[tuple[OrderRef, ...]] = []
    cur: list[OrderRef] = []
    size = envelope
    for ref in refs:
        item = len(_dumps(_cancel_item(ref))) + (1 if cur else 0)  # comma separator
        if cur and (len(cur) >= max_orders or size + item > max_chars):
            batches.append(tuple(cur))
            cur, size = [], envelope
            item -= 1
        if size + item > max_chars:
            raise ValueError(f"order {ref.venue_order_id!r} does not fit in one frame")
        cur.append(ref)
        size += item
    if cur:
        batches.append(tuple(cur))
    return batches


# --------------------------------------------------------------------------------------
# Internal acks (consumed by the session, never forwarded to the engine)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Welcome:
    nonce: str


@dataclass(frozen=True, slots=True)
class LoginAck:
    success: bool
    tag: str | None
    code: str = ""
    message: str = ""
    # The reply's ``timestamp``: the venue's clock (read for the offset only, not compared).
    server_ms: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SubscribeAck:
    success: bool
    tag: str | None
    channel: str = ""
    code: str = ""
    message: str = ""
    server_ms: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class CancelAck:
    """One ``cancelorder`` reply (one per element of a ``cancelorders`` batch).

    ``order_id`` is None when the venue refused the request as a whole (no data echoed).
    """

    tag: str | None
    submitted: bool
    order_id: str | None
    product: str | None
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class OrderCommandAck:
    """placeorder / modifyorder replies, and envelope-level failures of other ops."""

    event: str
    tag: str | None
    submitted: bool
    order_id: str | None = None
    product: str | None = None
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class CancelAllAck:
    """``{"event":"CANCEL","submitted":true}``: a cancel-all was processed (REST or GUI)."""

    ts_event_ms: int = 0


@dataclass(frozen=True, slots=True)
class AsyncCancelReject:
    """``CANCEL`` submitted:false (code 100004): the order was already gone. Confirm by snapshot."""

    order_id: str | None
    product: str | None
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class AsyncAmendReject:
    order_id: str | None
    product: str | None
    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class BalanceEntry:
    asset: str
    total: Decimal


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    entries: tuple[BalanceEntry, ...]
    ts_event_ms: int = 0


@dataclass(frozen=True, slots=True)
class PositionEntry:
    product: str
    qty: Decimal
    entry_price: Decimal
    pnl: Decimal | None = None
    mark_price: Decimal | None = None  # only REST carries it


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    entries: tuple[PositionEntry, ...]
    ts_event_ms: int = 0


# --------------------------------------------------------------------------------------
# Field validation
# --------------------------------------------------------------------------------------


def _obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise WireError(f"{what} is not an object")
    return value


def _str_field(d: Mapping, key: str) -> str:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WireError(f"{key} missing or not a string")
    return str(value)


def parse_bool(value: Any, what: str = "flag") -> bool:
    if value is True or value == "true":
        return True
    if value is False or value == "false":
        return False
    if isinstance(value, str):
        low = value.strip().lower()
        if low == "true":
            return True
        if low == "false":
            return False
    raise WireError(f"{what} is not a boolean")


def parse_decimal(value: Any, what: str = "number") -> Decimal:
    if type(value) is str:  # the venue's own form: every number in a push is a string
        text = value
    elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise WireError(f"{what} is not a number")
    else:
        text = repr(value) if isinstance(value, float) else str(value)
    if len(text) > 64:
        raise WireError(f"{what} too long")
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise WireError(f"{what} is not a number") from None
    if not number.is_finite():
        raise WireError(f"{what} is not finite")
    return number


def order_id_of(value: Any) -> str:
    # [0-9]{1,20} without the regex for the usual string (isdigit alone admits non-ASCII digits).
    if type(value) is str and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WireError("orderId missing")
    text = str(value)
    if not _ORDER_ID_RE.fullmatch(text):
        raise WireError("orderId is not a numeric string")
    return text


# Market codes already validated: an account trades a handful, so the regex runs once per
# code. Bounded, so a hostile stream of distinct codes cannot grow it.
_MARKETS_SEEN: dict[str, None] = {}
_MARKETS_SEEN_MAX = 4096


def market_of(value: Any) -> str:
    if type(value) is str and value in _MARKETS_SEEN:
        return value
    if not isinstance(value, str) or not _MARKET_RE.fullmatch(value):
        raise WireError("marketCode missing or malformed")
    if type(value) is str and len(_MARKETS_SEEN) < _MARKETS_SEEN_MAX:
        _MARKETS_SEEN[value] = None
    return value


def _asset_of(value: Any) -> str:
    if not isinstance(value, str) or not _ASSET_RE.fullmatch(value):
        raise WireError("asset missing or malformed")
    return value


def _code_of(d: Mapping) -> str:
    value = d.get("code")
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WireError("code malformed")
    text = str(value)
    if not _CODE_RE.fullmatch(text):
        raise WireError("code malformed")
    return text


def _message_of(d: Mapping) -> str:
    value = d.get("message", "")
    return value[:200] if isinstance(value, str) else ""


def _tag_of(d: Mapping) -> str | None:
    value = d.get("tag")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WireError("tag malformed")
    text = str(value)
    if len(text) > 64:
        raise WireError("tag too long")
    return text


def _ts_ms(value: Any) -> int:
    if type(value) is str and 0 < len(value) <= 16 and value.isascii() and value.isdigit():
        return int(value)  # < 10**16 by its length
    if value is None:
        return 0
    if isinstance(value, bool):
        raise WireError("timestamp malformed")
    if isinstance(value, int):
        ts = value
    elif isinstance(value, str) and value.isdigit() and len(value) <= 19:
        ts = int(value)
    else:
        raise WireError("timestamp malformed")
    if not 0 <= ts < 10**16:
        raise WireError("timestamp out of range")
    return ts


def _side_of(value: Any) -> Side | None:
    if value is None:
        return None
    if value == "BUY":
        return Side.BUY
    if value == "SELL":
        return Side.SELL
    raise WireError("side malformed")


def _opt_decimal(d: Mapping, key: str) -> Decimal | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    return parse_decimal(value, key)


def _opt_str_id(value: Any) -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value)
    return text if 0 < len(text) <= 40 else None


# --------------------------------------------------------------------------------------
# Close statuses
# --------------------------------------------------------------------------------------

_CLOSE_REASONS: dict[str, CloseReason] = {
    "FILLED": CloseReason.FILLED,
    "CANCELED_BY_USER": CloseReason.CANCELED,
    "CANCELED_BY_AMEND": CloseReason.CANCELED,
    "CANCELED_BY_BRACKET_ORDER": CloseReason.CANCELED,
    "CANCELED_BY_MAKER_ONLY": CloseReason.REJECTED,
    "CANCELED_BY_FOK": CloseReason.REJECTED,
    "CANCELED_BY_SELF_TRADE_PROTECTION": CloseReason.REJECTED,
    "CANCELED_ALL_BY_IOC": CloseReason.EXPIRED,
    "CANCELED_PARTIAL_BY_IOC": CloseReason.EXPIRED,
    "CANCELED_BY_MARKET_ORDER_NOT_FULL_MATCHED": CloseReason.EXPIRED,
    "CANCELED_BY_MARKET_ORDER_NOTHING_MATCH": CloseReason.EXPIRED,
    "CANCELED_ALL_BY_AUCTION": CloseReason.EXPIRED,
    "CANCELED_PARTIAL_BY_AUCTION": CloseReason.EXPIRED,
    "CANCELED_BY_NO_AUCTION": CloseReason.EXPIRED,
    "CANCELED_BY_PRE_AUCTION": CloseReason.EXPIRED,
}


def close_reason(status: str) -> CloseReason:
    """Every ``CANCELED_*`` is terminal; unknown ones are CANCELED, anything else UNKNOWN."""
    reason = _CLOSE_REASONS.get(status)
    if reason is not None:
        return reason
    if status.startswith("CANCELED"):
        return CloseReason.CANCELED
    return CloseReason.UNKNOWN


_TRIGGER_TYPES = frozenset({"STOP_LIMIT", "STOP_MARKET"})


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------


# The hot path builds these positionally (keywords cost ~0.6 us per order); fail at import,
# not silently, if the model's field order ever changes.
_ORDER_INFO_FIELDS = ("venue", "product", "venue_order_id", "client_order_id", "side", "price", "qty_remaining",
                      "is_trigger", "reduce_only", "ts_event_ms")
if tuple(OrderInfo.__dataclass_fields__) != _ORDER_INFO_FIELDS:  # pragma: no cover
    raise ImportError("killswitch.model.OrderInfo fields changed; update oxfun.wire.order_info_from")
if tuple(OrderClosed.__dataclass_fields__) != ("venue", "product", "venue_order_id", "reason", "ts_event_ms",
                                               "ts_recv_s"):  # pragma: no cover
    raise ImportError("killswitch.model.OrderClosed fields changed; update oxfun.wire._parse_order_item")
if tuple(OrderOpened.__dataclass_fields__) != ("order", "ts_recv_s", "is_new"):  # pragma: no cover
    raise ImportError("killswitch.model.OrderOpened fields changed; update oxfun.wire._parse_order_item")


def order_info_from(d: Mapping, venue: str, *, rest: bool = False) -> OrderInfo:
    get = d.get
    order_id = order_id_of(get("orderId"))
    market = market_of(get("marketCode"))
    triggered_raw = get("isTriggered")
    triggered = True if triggered_raw is None else parse_bool(triggered_raw, "isTriggered")
    remaining = _opt_decimal(d, "remainQuantity")
    if remaining is None:
        remaining = _opt_decimal(d, "quantity")
    return OrderInfo(
        venue,
        market,
        order_id,
        _opt_str_id(get("clientOrderId")),
        _side_of(get("side")),
        _opt_decimal(d, "price") if get("price") is not None else _opt_decimal(d, "stopPrice"),
        remaining,
        get("orderType") in _TRIGGER_TYPES and not triggered,
        False,  # reduce_only: OX.FUN v2 has no reduce-only flag on orders
        _ts_ms(get("lastModifiedAt") if rest else get("timestamp")),
    )


def _parse_order_item(d: Any, venue: str, ts_recv_s: float, out: list) -> None:
    """One element of an ``order`` push's ``data`` list -> its events, appended to ``out``."""
    if type(d) is not dict:
        d = _obj(d, "order item")
    notice = d.get("notice")
    if notice == "OrderOpened":
        out.append(OrderOpened(order_info_from(d, venue), ts_recv_s, True))
        return
    if notice == "OrderModified":
        out.append(OrderOpened(order_info_from(d, venue), ts_recv_s, False))
        return
    order_id = order_id_of(d.get("orderId"))
    market = market_of(d.get("marketCode"))
    ts = _ts_ms(d.get("timestamp"))
    status = d.get("status")
    if not isinstance(status, str) or len(status) > 64:
        raise WireError("status missing")
    if notice == "OrderClosed":
        out.append(OrderClosed(venue, market, order_id, close_reason(status), ts, ts_recv_s))
        return
    if notice == "OrderMatched":
        qty = parse_decimal(d.get("matchQuantity"), "matchQuantity")
        price = parse_decimal(d.get("matchPrice"), "matchPrice")
        remaining = _opt_decimal(d, "remainQuantity")
        out.append(
            OrderFilled(
                venue, market, order_id, _side_of(d.get("side")), qty, price,
                remaining=remaining, ts_event_ms=ts, ts_recv_s=ts_recv_s,
            )
        )
        # No separate OrderClosed is documented for fills: FILLED ends the order.
        if status == "FILLED" or (remaining is not None and remaining == 0):
            out.append(OrderClosed(venue, market, order_id, CloseReason.FILLED, ts, ts_recv_s))
        return
    raise WireError("unknown order notice")


def _parse_table(frame: dict, venue: str, ts_recv_s: float) -> list:
    table = frame["table"]
    data = frame.get("data")
    if not isinstance(data, list):
        raise WireError("table data is not a list")
    if table == "order":
        # Every element of a push lands (the venue may put several orders in one push);
        # one malformed element makes the whole frame a BadFrame, as before.
        out: list = []
        for item in data:
            _parse_order_item(item, venue, ts_recv_s, out)
        return out
    if table == "balance":
        entries = []
        for item in data:
            item = _obj(item, "balance item")
            entries.append(BalanceEntry(_asset_of(item.get("instrumentId")), parse_decimal(item.get("total"), "total")))
        return [BalanceUpdate(tuple(entries), ts_event_ms=_ts_ms(frame.get("timestamp")))]
    if table == "position":
        ts = _ts_ms(frame.get("timestamp"))
        entries, events = [], []
        for item in data:
            item = _obj(item, "position item")
            entry = PositionEntry(
                product=market_of(item.get("instrumentId")),
                qty=parse_decimal(item.get("quantity"), "quantity"),
                entry_price=_opt_decimal(item, "entryPrice") or Decimal(0),
                pnl=_opt_decimal(item, "positionPnl"),
            )
            entries.append(entry)
            events.append(PositionObserved(venue, entry.product, entry.qty, ts_event_ms=ts, ts_recv_s=ts_recv_s))
        return [PositionUpdate(tuple(entries), ts_event_ms=ts), *events]
    if table == "ticker":
        out = []
        for item in data:
            item = _obj(item, "ticker item")
            mark = item.get("markPrice")
            if mark is None:
                continue
            out.append(
                MarkPriceObserved(
                    venue, market_of(item.get("marketCode")), parse_decimal(mark, "markPrice"),
                    ts_event_ms=_ts_ms(item.get("timestamp")), ts_recv_s=ts_recv_s,
                )
            )
        return out
    if isinstance(table, str) and len(table) <= 40:
        return []  # public channel we do not use (depth, trade, ...): a sign of life only
    raise WireError("table malformed")


def _parse_event(frame: dict, venue: str, ts_recv_s: float) -> list:
    event = frame["event"]
    if not isinstance(event, str):
        raise WireError("event is not a string")
    tag = _tag_of(frame)
    code = _code_of(frame)
    message = _message_of(frame)
    if event == "Welcome" or "nonce" in frame:
        nonce = frame.get("nonce", "")
        return [Welcome(nonce if isinstance(nonce, str) else "")]
    if event == "login":
        return [LoginAck(parse_bool(frame.get("success"), "success"), tag, code, message, _server_ms(frame))]
    if event in ("subscribe", "unsubscribe"):
        channel = frame.get("channel", "")
        if isinstance(channel, list):
            channel = ",".join(c for c in channel if isinstance(c, str))
        if not isinstance(channel, str):
            raise WireError("channel malformed")
        return [SubscribeAck(parse_bool(frame.get("success"), "success"), tag, channel[:80], code, message,
                             _server_ms(frame))]
    if event == "CANCEL" or event == "AMEND":
        submitted = parse_bool(frame.get("submitted"), "submitted")
        data = frame.get("data")
        if submitted and data is None:
            if event == "CANCEL":
                return [CancelAllAck(_ts_ms(frame.get("timestamp")))]
            return []
        order_id = product = None
        if isinstance(data, dict):
            order_id = order_id_of(data["orderId"]) if data.get("orderId") is not None else None
            product = market_of(data["marketCode"]) if data.get("marketCode") is not None else None
        if submitted:
            return []
        cls = AsyncCancelReject if event == "CANCEL" else AsyncAmendReject
        return [cls(order_id, product, code or "100004", message)]
    # Order commands reply with "submitted"; other ops' envelope failures with "success".
    flag = frame.get("submitted", frame.get("success"))
    if flag is None:
        raise WireError("reply without submitted/success")
    submitted = parse_bool(flag, "submitted")
    data = frame.get("data")
    order_id = product = None
    if isinstance(data, dict):
        if data.get("orderId") is not None:
            order_id = order_id_of(data["orderId"])
        if data.get("marketCode") is not None:
            product = market_of(data["marketCode"])
    elif data is not None:
        raise WireError("data malformed")
    if event == "cancelorder":
        return [CancelAck(tag, submitted, order_id, product, code, message)]
    ack = OrderCommandAck(event[:40], tag, submitted, order_id, product, code, message)
    if not submitted and event in ("placeorder", "placeorders", "modifyorder", "modifyorders"):
        ts = _ts_ms(frame.get("timestamp")) if isinstance(frame.get("timestamp"), (str, int)) else 0
        return [ack, OrderRejected(venue, code, message, product=product, ts_event_ms=ts, ts_recv_s=ts_recv_s)]
    return [ack]


def _bad(venue: str, error: str, text: str, ts_recv_s: float) -> BadFrame:
    return BadFrame(venue, error, sample=text[:_SAMPLE_CHARS], ts_recv_s=ts_recv_s)


def parse_frame(text: str, venue: str, ts_recv_s: float) -> list:
    """One received text frame -> model events and internal acks, in order. Never raises:
    anything malformed or unknown comes back as a single :class:`BadFrame`."""
    if not isinstance(text, str):
        return [_bad(venue, "binary frame", "", ts_recv_s)]
    if text == PONG:
        return [Pong()]
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return [_bad(venue, "not JSON", text, ts_recv_s)]
    try:
        if not isinstance(frame, dict):
            raise WireError("frame is not an object")
        if "table" in frame:
            return _parse_table(frame, venue, ts_recv_s)
        if "event" in frame:
            return _parse_event(frame, venue, ts_recv_s)
        if "nonce" in frame:  # v1-style greeting {"notice":"Welcome","nonce":...}
            nonce = frame["nonce"]
            return [Welcome(nonce if isinstance(nonce, str) else "")]
        raise WireError("unknown frame")
    except WireError as exc:
        return [_bad(venue, str(exc), text, ts_recv_s)]


# --------------------------------------------------------------------------------------
# REST payloads
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestError:
    code: str
    message: str


def rest_error_of(obj: Any) -> RestError | None:
    """None when the reply is a success envelope; else the venue's code/message."""
    if not isinstance(obj, dict):
        return RestError("", "reply is not a JSON object")
    success = obj.get("success")
    try:
        ok = parse_bool(success, "success") if success is not None else True
        code = _code_of(obj)
    except WireError as exc:
        return RestError("", str(exc))
    if ok and not code:
        return None
    return RestError(code, _message_of(obj))


def parse_working_orders(obj: Any, venue: str) -> tuple[OrderInfo, ...]:
    data = _obj(obj, "reply").get("data")
    if data is None:
        return ()
    if not isinstance(data, list):
        raise WireError("orders data is not a list")
    return tuple(order_info_from(_obj(item, "order"), venue, rest=True) for item in data)


def _accounts(obj: Any) -> Iterable[dict]:
    data = _obj(obj, "reply").get("data")
    if data is None:
        return ()
    if not isinstance(data, list):
        raise WireError("data is not a list")
    return [_obj(a, "account") for a in data]


def parse_balances(obj: Any) -> tuple[BalanceEntry, ...]:
    out = []
    for account in _accounts(obj):
        items = account.get("balances") or []
        if not isinstance(items, list):
            raise WireError("balances is not a list")
        for item in items:
            item = _obj(item, "balance")
            out.append(BalanceEntry(_asset_of(item.get("asset")), parse_decimal(item.get("total"), "total")))
    return tuple(out)


def parse_positions(obj: Any) -> tuple[PositionEntry, ...]:
    out = []
    for account in _accounts(obj):
        items = account.get("positions") or []
        if not isinstance(items, list):
            raise WireError("positions is not a list")
        for item in items:
            item = _obj(item, "position")
            out.append(
                PositionEntry(
                    product=market_of(item.get("marketCode")),
                    qty=parse_decimal(item.get("position"), "position"),
                    entry_price=_opt_decimal(item, "entryPrice") or Decimal(0),
                    pnl=_opt_decimal(item, "positionPnl"),
                    mark_price=_opt_decimal(item, "markPrice"),
                )
            )
    return tuple(out)


def parse_rest_cancel_results(obj: Any) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """``DELETE /v3/orders/cancel`` reply -> (cancelled ids, gone ids, [(id, code, message)] rejects)."""
    data = _obj(obj, "reply").get("data")
    if not isinstance(data, list):
        raise WireError("cancel data is not a list")
    cancelled, gone, rejected = [], [], []
    for item in data:
        item = _obj(item, "cancel result")
        order_id = order_id_of(item.get("orderId"))
        if parse_bool(item.get("submitted"), "submitted"):
            cancelled.append(order_id)
            continue
        code = _code_of(item)
        if code in GONE_CODES:
            gone.append(order_id)
        else:
            rejected.append((order_id, code, _message_of(item)))
    return cancelled, gone, rejected


# "Not found / not owned" on WS (100005/100006), REST per-order "not found" (40035), and
# the async engine reject (100004): the order is probably gone; the snapshot confirms.
GONE_CODES = frozenset({"100004", "100005", "100006", "40035"})
AUTH_CODES = frozenset({"20000", "20024", "20025", "20026", "05001"})
MAINTENANCE_CODES = frozenset({"000101", "000201", "20032", "20031"})
RATE_CODES = frozenset({"20007"})
