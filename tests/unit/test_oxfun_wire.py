"""OX.FUN wire layer: known-answer vectors, encoders, parser table, fuzz."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.model import (
    BadFrame,
    CloseReason,
    MarkPriceObserved,
    OrderClosed,
    OrderFilled,
    OrderOpened,
    OrderRef,
    OrderRejected,
    PositionObserved,
    Side,
)
from killswitch.venues.oxfun import wire

# A copy of the shared known-answer vectors kept in the repository, so a fresh clone runs this.
VECTORS = Path(__file__).parents[1] / "vectors" / "vectors.json"
V = "ox"


def _vectors():
    return json.loads(VECTORS.read_text())["oxfun_hmac"]


# ---------------------------------------------------------------------------- signing


def test_ws_login_vectors():
    vec = _vectors()
    for case in vec["ws_login"]:
        assert case["signed"] == case["timestamp"] + wire.LOGIN_PATH_SUFFIX
        assert wire.login_signature(vec["api_secret"], case["timestamp"]) == case["signature"]


def test_rest_vectors():
    vec = _vectors()
    for case in vec["rest"]:
        sig = wire.rest_signature(
            vec["api_secret"], case["timestamp"], case["nonce"], case["verb"], case["host"], case["path"], case["body"]
        )
        assert sig == case["signature"], case["path"]


def test_rest_headers_and_timestamp():
    assert wire.rest_timestamp(1704067200999) == "2024-01-01T00:00:00"
    assert wire.parse_rest_timestamp("2024-01-01T00:00:00") == 1704067200000
    h = wire.rest_headers(api_key="test-key", secret="test-secret", timestamp="2024-01-01T00:00:00", nonce="1704067200000",
                          verb="get", host="api.ox.fun", path="/v3/balances", body="")
    assert h["AccessKey"] == "test-key" and h["Nonce"] == "1704067200000"
    assert h["Signature"] == "dxX/nTWKbHOKCa9Rjusstp++2t3Jlr93MPm1wLBBiEg="
    assert wire.encode_query({"b": "2", "a": "x y", "c": None}) == "a=x+y&b=2"


def test_login_frame_uses_string_timestamp():
    frame = orjson.loads(wire.encode_login("k", "test-secret", 1704067200000, "k1"))
    assert frame == {"op": "login", "tag": "k1", "data": {"apiKey": "k", "timestamp": "1704067200000",
                                                          "signature": "k41bvWFb2FoQ76X9qVwcHaxbjMcYPpOdesW8mTD4Jsw="}}


# ---------------------------------------------------------------------------- encoders


def _refs(n: int, market: str = "BTC-USD-SWAP-LIN", width: int = 13):
    return [OrderRef(V, market, str(10 ** (width - 1) + i)) for i in range(n)]


def test_tags_unique_and_short():
    tags = wire.TagCounter("k")
    seen = {tags.next() for _ in range(100_000)}
    assert len(seen) == 100_000
    assert max(len(t) for t in seen) < 32


def test_cancel_batches_split_by_count():
    batches = wire.split_cancel_batches(_refs(45))
    assert [len(b) for b in batches] == [20, 20, 5]
    assert [r for b in batches for r in b] == _refs(45)


def test_cancel_batches_split_by_length():
    long_market = "X" * 39
    refs = _refs(60, market=long_market, width=20)
    batches = wire.split_cancel_batches(refs, max_chars=1500)
    assert sum(len(b) for b in batches) == 60
    for b in batches:
        assert len(b) <= 20
        assert len(wire.encode_cancelorders(b, "t" * 31)) <= 1500
    # With the real limit every frame stays under the venue's ~4000 chars.
    for b in wire.split_cancel_batches(refs):
        assert len(wire.encode_cancelorders(b, "t" * 31)) < wire.MAX_FRAME_CHARS


def test_cancel_encoders_shape():
    refs = _refs(2)
    f = orjson.loads(wire.encode_cancelorders(refs, "k9"))
    assert f == {"op": "cancelorders", "tag": "k9", "dataArray": [
        {"marketCode": "BTC-USD-SWAP-LIN", "orderId": refs[0].venue_order_id},
        {"marketCode": "BTC-USD-SWAP-LIN", "orderId": refs[1].venue_order_id}]}
    one = orjson.loads(wire.encode_cancelorder(refs[0], "k1"))
    assert one["op"] == "cancelorder" and one["data"]["orderId"] == refs[0].venue_order_id
    sub = orjson.loads(wire.encode_subscribe(["order:all", wire.ticker_channel("ETH-USD-SWAP-LIN")], "k2"))
    assert sub["args"] == ["order:all", "ticker:ETH-USD-SWAP-LIN"]


# ---------------------------------------------------------------------------- parser


def P(obj) -> list:
    return wire.parse_frame(obj if isinstance(obj, str) else orjson.dumps(obj).decode(), V, 1.5)


def _order(notice: str, status: str, **kw) -> dict:
    d = {"notice": notice, "accountId": "1", "clientOrderId": "16", "orderId": "1000000000123", "price": "9600",
         "quantity": "2", "remainQuantity": "2", "side": "BUY", "status": status, "marketCode": "BTC-USD-SWAP-LIN",
         "timeInForce": "GTC", "timestamp": "1594943491077", "orderType": "LIMIT", "isTriggered": "False"}
    d.update(kw)
    return {"table": "order", "data": [d]}


def test_pong_welcome_login_subscribe():
    assert P("pong") == [wire.Pong()]
    assert P({"event": "Welcome", "nonce": "abc"}) == [wire.Welcome("abc")]
    assert P({"notice": "Welcome", "nonce": "abc"}) == [wire.Welcome("abc")]
    assert P({"event": "login", "success": True, "tag": "1", "timestamp": "1"}) == [wire.LoginAck(True, "1")]
    assert P({"event": "login", "success": False, "code": "20000", "message": "Signature is invalid", "tag": 1}) == [
        wire.LoginAck(False, "1", "20000", "Signature is invalid")]
    assert P({"success": "True", "tag": "102", "event": "subscribe", "channel": "order:all"}) == [
        wire.SubscribeAck(True, "102", "order:all")]


def test_order_opened_and_modified():
    (ev,) = P(_order("OrderOpened", "OPEN"))
    assert isinstance(ev, OrderOpened) and ev.is_new and ev.ts_recv_s == 1.5
    o = ev.order
    assert (o.venue, o.product, o.venue_order_id, o.client_order_id) == (V, "BTC-USD-SWAP-LIN", "1000000000123", "16")
    assert o.side is Side.BUY and o.price == Decimal("9600") and o.qty_remaining == Decimal("2") and not o.is_trigger
    assert o.ts_event_ms == 1594943491077
    (mod,) = P(_order("OrderModified", "OPEN", price="30.0"))
    assert isinstance(mod, OrderOpened) and not mod.is_new and mod.order.price == Decimal("30.0")


@pytest.mark.parametrize("otype,triggered,expect", [
    ("STOP_LIMIT", "false", True), ("STOP_MARKET", "False", True), ("STOP_LIMIT", "true", False), ("LIMIT", "false", False),
])
def test_untriggered_stops_are_trigger_orders(otype, triggered, expect):
    (ev,) = P(_order("OrderOpened", "OPEN", orderType=otype, isTriggered=triggered, stopPrice="9000"))
    assert ev.order.is_trigger is expect


@pytest.mark.parametrize("status,reason", [
    ("CANCELED_BY_USER", CloseReason.CANCELED),
    ("CANCELED_BY_MAKER_ONLY", CloseReason.REJECTED),
    ("CANCELED_BY_FOK", CloseReason.REJECTED),
    ("CANCELED_ALL_BY_IOC", CloseReason.EXPIRED),
    ("CANCELED_PARTIAL_BY_IOC", CloseReason.EXPIRED),
    ("CANCELED_BY_AMEND", CloseReason.CANCELED),
    ("CANCELED_BY_SELF_TRADE_PROTECTION", CloseReason.REJECTED),
    ("CANCELED_BY_MARKET_ORDER_NOTHING_MATCH", CloseReason.EXPIRED),
    ("CANCELED_BY_BRACKET_ORDER", CloseReason.CANCELED),
    ("CANCELED_BY_SOMETHING_NEW", CloseReason.CANCELED),
    ("FILLED", CloseReason.FILLED),
    ("WEIRD", CloseReason.UNKNOWN),
])
def test_order_closed_every_status(status, reason):
    (ev,) = P(_order("OrderClosed", status))
    assert isinstance(ev, OrderClosed) and ev.reason is reason and ev.venue_order_id == "1000000000123"


def test_order_matched_partial_and_full():
    part = P(_order("OrderMatched", "PARTIAL_FILL", matchQuantity="0.5", matchPrice="9599.5", remainQuantity="1.5"))
    assert len(part) == 1 and isinstance(part[0], OrderFilled)
    assert part[0].qty == Decimal("0.5") and part[0].price == Decimal("9599.5") and part[0].remaining == Decimal("1.5")
    full = P(_order("OrderMatched", "FILLED", matchQuantity="1.5", matchPrice="9600", remainQuantity="0.0"))
    assert [type(e) for e in full] == [OrderFilled, OrderClosed]
    assert full[1].reason is CloseReason.FILLED


def test_multi_order_push_lands_every_element_in_order():
    """The venue's ``data`` is a list: a push carrying several orders yields every one."""
    items = [_order("OrderOpened", "OPEN", orderId=str(1000000000200 + i), price=str(9000 + i))["data"][0]
             for i in range(8)]
    items.append(_order("OrderClosed", "CANCELED_BY_USER", orderId="1000000000200")["data"][0])
    items.append(_order("OrderMatched", "FILLED", orderId="1000000000201", matchQuantity="2", matchPrice="9001",
                        remainQuantity="0")["data"][0])
    items.append(_order("OrderModified", "OPEN", orderId="1000000000202", price="8000")["data"][0])
    out = P({"table": "order", "data": items})
    assert [type(e) for e in out] == [OrderOpened] * 8 + [OrderClosed, OrderFilled, OrderClosed, OrderOpened]
    assert [e.order.venue_order_id for e in out[:8]] == [str(1000000000200 + i) for i in range(8)]
    assert [e.order.price for e in out[:8]] == [Decimal(9000 + i) for i in range(8)]
    assert all(e.is_new for e in out[:8]) and not out[-1].is_new and out[-1].order.price == Decimal("8000")
    assert out[8].venue_order_id == "1000000000200" and out[8].reason is CloseReason.CANCELED
    assert out[10].venue_order_id == "1000000000201" and out[10].reason is CloseReason.FILLED
    assert P({"table": "order", "data": []}) == []
    # One malformed element makes the whole push a BadFrame (nothing half-applied).
    bad = P({"table": "order", "data": items[:3] + [{"notice": "OrderOpened", "orderId": "x"}]})
    assert len(bad) == 1 and isinstance(bad[0], BadFrame)


@pytest.mark.parametrize("value,ok", [
    ("1", True), ("0" * 20, True), ("9" * 21, False), ("", False), ("12a", False), ("-1", False), (" 1", False),
    ("\u0661\u0662", False),  # Arabic-Indic digits: str.isdigit() says yes, the venue's ids are ASCII
    ("\u00b2", False), (12, True), (-12, False), (True, False), (None, False), (1.0, False), ([1], False),
])
def test_order_id_validation(value, ok):
    if ok:
        assert wire.order_id_of(value) == str(value)
    else:
        with pytest.raises(wire.WireError):
            wire.order_id_of(value)


@pytest.mark.parametrize("value,ok", [
    ("BTC-USD-SWAP-LIN", True), ("OX-USDT", True), ("a" * 40, True), ("a" * 41, False), ("-BTC", False),
    ("BTC USD", False), ("", False), (None, False), (5, False), (["BTC"], False), ({"a": 1}, False),
])
def test_market_validation_and_cache(value, ok):
    for _ in range(2):  # the second call hits the cache of validated codes
        if ok:
            assert wire.market_of(value) == value
        else:
            with pytest.raises(wire.WireError):
                wire.market_of(value)


@pytest.mark.parametrize("value,expect", [
    ("1594943491077", 1594943491077), ("0", 0), (None, 0), (1594943491077, 1594943491077),
    ("9" * 16, 10**16 - 1), ("1" + "0" * 16, None), ("-1", None), ("1.5", None), (True, None), ("", None),
])
def test_timestamp_validation(value, expect):
    if expect is None:
        with pytest.raises(wire.WireError):
            wire._ts_ms(value)
    else:
        assert wire._ts_ms(value) == expect


@pytest.mark.parametrize("value,expect", [
    (True, True), (False, False), ("true", True), ("false", False), ("True", True), ("FALSE", False),
    (" true ", True), ("yes", None), (1, None), (0, None), (None, None),
])
def test_parse_bool(value, expect):
    if expect is None:
        with pytest.raises(wire.WireError):
            wire.parse_bool(value)
    else:
        assert wire.parse_bool(value) is expect


def test_cancel_acks_and_both_gone_paths():
    ok = P({"event": "cancelorder", "submitted": True, "tag": "456", "data": {"marketCode": "BTC-USD-SWAP-LIN", "orderId": "12"}})
    assert ok == [wire.CancelAck("456", True, "12", "BTC-USD-SWAP-LIN")]
    nf = P({"event": "cancelorder", "submitted": False, "tag": "456", "code": "100005", "message": "Open order not found",
            "data": {"marketCode": "BTC-USD-SWAP-LIN", "orderId": 12}})
    assert nf == [wire.CancelAck("456", False, "12", "BTC-USD-SWAP-LIN", "100005", "Open order not found")]
    assert "100005" in wire.GONE_CODES and "100006" in wire.GONE_CODES
    race = P({"event": "CANCEL", "submitted": False, "message": "Order request was rejected : REJECT_CANCEL_ORDER_ID_NOT_FOUND",
              "code": "100004", "timestamp": "0", "data": {"clientOrderId": 3, "orderId": 3330802124194931673,
                                                             "marketCode": "BTC-USD-SWAP-LIN", "price": 0.0, "isTriggered": False}})
    assert race == [wire.AsyncCancelReject("3330802124194931673", "BTC-USD-SWAP-LIN", "100004",
                                           "Order request was rejected : REJECT_CANCEL_ORDER_ID_NOT_FOUND")]
    assert P({"event": "CANCEL", "submitted": True, "timestamp": "1612476498953"}) == [wire.CancelAllAck(1612476498953)]
    amend = P({"event": "AMEND", "submitted": False, "code": "100004", "data": {"orderId": 5, "marketCode": "X-Y"}})
    assert amend == [wire.AsyncAmendReject("5", "X-Y", "100004", "")]


def test_place_reject_is_order_rejected_and_batch_error():
    out = P({"event": "placeorder", "submitted": False, "tag": "1", "code": "710005", "message": "Insufficient margin",
             "timestamp": "1", "data": {"marketCode": "ETH-USD-SWAP-LIN"}})
    assert isinstance(out[0], wire.OrderCommandAck)
    assert out[1] == OrderRejected(V, "710005", "Insufficient margin", "ETH-USD-SWAP-LIN", 1, 1.5)
    jsonerr = P({"event": "placeorder", "submitted": False, "message": "JSON data format is invalid", "code": "20009",
                 "timestamp": "1716932877381"})
    assert isinstance(jsonerr[1], OrderRejected) and jsonerr[1].code == "20009"
    rate = P({"event": "cancelorders", "success": False, "tag": "k3", "code": "20007"})
    assert rate == [wire.OrderCommandAck("cancelorders", "k3", False, code="20007")]


def test_balance_position_ticker():
    (bal,) = P({"table": "balance", "accountId": "1", "timestamp": "1716549132780", "tradeType": "PORTFOLIO",
                "data": [{"instrumentId": "OX", "total": "-7.55", "available": "1", "reserved": "0"}]})
    assert bal == wire.BalanceUpdate((wire.BalanceEntry("OX", Decimal("-7.55")),), 1716549132780)
    upd, obs = P({"table": "position", "accountId": "1", "timestamp": "1716550771582", "data": [
        {"instrumentId": "ETH-USD-SWAP-LIN", "quantity": "-0.01", "entryPrice": "3709.6", "positionPnl": "-5.000"}]})
    assert upd.entries == (wire.PositionEntry("ETH-USD-SWAP-LIN", Decimal("-0.01"), Decimal("3709.6"), Decimal("-5.000")),)
    assert isinstance(obs, PositionObserved) and obs.qty == Decimal("-0.01")
    (tick,) = P({"table": "ticker", "data": [{"marketCode": "ETH-USD-SWAP-LIN", "markPrice": "3088.6", "timestamp": "1716212747050"}]})
    assert tick == MarkPriceObserved(V, "ETH-USD-SWAP-LIN", Decimal("3088.6"), 1716212747050, 1.5)
    assert P({"table": "depthL5", "data": []}) == []


@pytest.mark.parametrize("frame", [
    "not json", "[1,2]", "{}", '{"event": 5}', '{"table":"order","data":{}}',
    orjson.dumps(_order("OrderOpened", "OPEN", orderId="12a")).decode(),
    orjson.dumps(_order("OrderOpened", "OPEN", marketCode="BTC USD")).decode(),
    orjson.dumps(_order("OrderOpened", "OPEN", price="NaN")).decode(),
    orjson.dumps(_order("OrderMatched", "FILLED")).decode(),
    '{"event":"login","success":"maybe"}',
    '{"event":"cancelorder","submitted":true,"tag":"1","data":{"orderId":"1; DROP"}}',
])
def test_malformed_frames_become_bad_frame(frame):
    out = wire.parse_frame(frame, V, 0.0)
    assert len(out) == 1 and isinstance(out[0], BadFrame)
    assert len(out[0].sample) <= 160


def test_rest_payloads():
    orders = wire.parse_working_orders({"success": True, "data": [{
        "orderId": "1000026408953", "clientOrderId": "1", "marketCode": "BTC-USDT", "status": "OPEN", "side": "BUY",
        "price": "1000.0", "isTriggered": False, "quantity": "10.0", "remainQuantity": "10.0", "orderType": "STOP_LIMIT",
        "lastModifiedAt": "1680113440875"}]}, V)
    assert orders[0].is_trigger and orders[0].qty_remaining == Decimal("10.0") and orders[0].ts_event_ms == 1680113440875
    bals = wire.parse_balances({"success": True, "data": [{"balances": [{"asset": "USDT", "total": "4468.823"}]}]})
    assert bals == (wire.BalanceEntry("USDT", Decimal("4468.823")),)
    pos = wire.parse_positions({"success": True, "data": [{"positions": [{"marketCode": "BTC-USD-SWAP-LIN", "position": "-0.00030",
                                                                          "entryPrice": "43976.7", "markPrice": "43706.3",
                                                                          "positionPnl": "8.112"}]}]})
    assert pos[0].mark_price == Decimal("43706.3") and pos[0].qty == Decimal("-0.00030")
    assert wire.rest_error_of({"success": False, "code": "000101", "message": "m"}) == wire.RestError("000101", "m")
    assert wire.rest_error_of({"success": True, "data": {}}) is None


# ---------------------------------------------------------------------------- fuzz

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(["OrderOpened", "OrderClosed", "OrderMatched", "OrderModified",
                                                           "order", "balance", "position", "ticker", "CANCEL", "AMEND",
                                                           "login", "subscribe", "cancelorder", "placeorder", "true",
                                                           "False", "1000000000001", "BTC-USD-SWAP-LIN", "FILLED"]))
_keys = st.sampled_from(["table", "event", "data", "notice", "orderId", "marketCode", "status", "submitted", "success",
                         "tag", "code", "message", "nonce", "timestamp", "matchQuantity", "matchPrice", "remainQuantity",
                         "instrumentId", "total", "quantity", "entryPrice", "positionPnl", "markPrice", "isTriggered",
                         "orderType", "side", "price", "channel"]) | st.text(max_size=8)
_json = st.recursive(_scalar, lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=8),
                     max_leaves=25)


@settings(max_examples=1500, deadline=None)
@given(_json)
def test_fuzz_parse_frame_only_typed_results(obj):
    try:
        text = json.dumps(obj)
    except (ValueError, OverflowError):
        return
    out = wire.parse_frame(text, V, 0.0)
    assert isinstance(out, list)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_parse_frame_raw_text(text):
    assert isinstance(wire.parse_frame(text, V, 0.0), list)
