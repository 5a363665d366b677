"""Encoders, parser table and fuzzing of the Vertex/Nado wire layer."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.model import CashFlowObserved, CloseReason, OrderClosed, OrderFilled, OrderOpened, PositionObserved, Side
from killswitch.venues.vertex import wire

SENDER = bytes.fromhex("2c7536e3605d9c16a7a3d7b1898e529396a65c2364656661756c740000000000")
D1 = "0x" + "ab" * 32
SIG = bytes.fromhex(
    "fa71d14b6da09a58047579632be0f1cd8adbb2b3ed201494cda25479b4b26bd21eaf1dd4b3996fd3af1522acb6180a6c135d1aa908c15ac2b89fb74341e6e0241c"
)


def test_cancel_product_orders_matches_sdk_wire_body():
    body = wire.encode_cancel_product_orders(SENDER, [2], 1782579200000000001, SIG)
    expected = (
        '{"cancel_product_orders":{"tx":{"sender":"0x2c7536e3605d9c16a7a3d7b1898e529396a65c2364656661756c740000000000",'
        '"productIds":[2],"nonce":"1782579200000000001"},"signature":"0x' + SIG.hex() + '"}}'
    )
    assert orjson.loads(body) == orjson.loads(expected)


def test_other_encoders():
    b = orjson.loads(wire.encode_cancel_orders(SENDER, [1, 2], [b"\x01" * 32, b"\x02" * 32], 7, SIG))
    assert b["cancel_orders"]["tx"]["digests"] == ["0x" + "01" * 32, "0x" + "02" * 32]
    assert b["cancel_orders"]["tx"]["nonce"] == "7" and b["cancel_orders"]["tx"]["productIds"] == [1, 2]
    a = orjson.loads(wire.encode_authenticate(SENDER, 1700000090000, SIG, 3))
    assert a == {"method": "authenticate", "id": 3, "tx": {"sender": "0x" + SENDER.hex(), "expiration": "1700000090000"},
                 "signature": "0x" + SIG.hex()}
    s = orjson.loads(wire.encode_subscribe("order_update", SENDER, 2, 9))
    assert s == {"method": "subscribe", "stream": {"type": "order_update", "subaccount": "0x" + SENDER.hex(),
                                                   "product_id": 2}, "id": 9}
    assert "product_id" not in orjson.loads(wire.encode_subscribe("fill", SENDER, None, 1))["stream"]
    q = orjson.loads(wire.encode_query("orders", sender="0x" + SENDER.hex(), product_ids=[1, 2]))
    assert q["type"] == "orders" and q["product_ids"] == [1, 2]
    t = orjson.loads(wire.encode_list_trigger_orders(SENDER, 5, SIG))
    assert t["tx"] == {"sender": "0x" + SENDER.hex(), "recvTime": "5"} and t["type"] == "list_trigger_orders"
    o = wire.OrderTx(SENDER, -10**18, 2 * 10**18, 4294967295, 99, appendix=1)
    p = orjson.loads(wire.encode_place_order(3, o, SIG, request_id=100))["place_order"]
    assert p["order"]["priceX18"] == "-1000000000000000000" and p["order"]["appendix"] == "1" and p["id"] == 100
    assert "appendix" not in wire.OrderTx(SENDER, 1, 1, 1, 1).to_json()


ORDER = {"product_id": 2, "sender": "0x" + SENDER.hex(), "price_x18": "20000000000000000000000",
         "amount": "-100000000000000000", "expiration": "1686332748", "order_type": "post_only",
         "nonce": "1768248100142339392", "unfilled_amount": "-100000000000000000", "digest": D1, "appendix": "3585",
         "placed_at": 1686332708}


def test_parse_responses():
    ok = wire.parse_response({"status": "success", "signature": "0x", "data": {"cancelled_orders": [ORDER]},
                              "request_type": "execute_cancel_product_orders"})
    assert ok.ok and wire.parse_cancelled_orders(ok.data) == (D1,)
    bad = wire.parse_response({"status": "failure", "signature": "", "error": "late", "error_code": 2011,
                               "request_type": "execute_cancel_orders"})
    assert not bad.ok and bad.error_code == 2011 and bad.error == "late"
    assert wire.parse_cancelled_orders(None) == ()
    info = wire.parse_order(ORDER).to_info("v")
    assert info.side is Side.SELL and info.price == Decimal(20000) and info.qty_remaining == Decimal("0.1")
    assert info.reduce_only is True and info.product == "2" and info.ts_event_ms == 1686332708000


def test_parse_orders_queries_and_contracts():
    assert [o.digest for o in wire.parse_orders_query({"product_orders": [{"product_id": 2, "orders": [ORDER]}]})] == [D1]
    assert [o.digest for o in wire.parse_orders_query({"sender": "0x", "product_id": 2, "orders": [ORDER]})] == [D1]
    assert wire.parse_contracts({"chain_id": "57073", "endpoint_addr": "0xAB"}) == (57073, "0xab", ())
    assert wire.parse_all_products({"spot_products": [{"product_id": 0}, {"product_id": 1}],
                                    "perp_products": [{"product_id": 2}]}) == (0, 1, 2)
    trig = {"orders": [{"product_id": 4, "digest": D1, "order": {"order": {"sender": "0x", "priceX18": "1",
                                                                          "amount": "5", "expiration": "1",
                                                                          "nonce": "1"}}}]}
    (t,) = wire.parse_trigger_orders(trig)
    assert t.digest == D1 and t.to_info("v", is_trigger=True).is_trigger


def test_equity_is_exact_decimal():
    h = [{"health": "1"}, {"health": "2"}, {"health": "380609361253391893918983"}]
    info = wire.parse_subaccount_info({"healths": h})
    assert info.equity == Decimal("380609.361253391893918983")
    big = wire.parse_subaccount_info({"healths": [{"health": "0"}] * 2 + [{"health": str(-(1 << 127))}]})
    # 39 digits: the default 28-digit context would round here; ours is exact.
    assert big.equity == Decimal("-170141183460469231731.687303715884105728")
    assert big.equity != Decimal(-(1 << 127)) / Decimal(10**18)


TS = "1695081920633151000"
TABLE = [
    ({"type": "order_update", "timestamp": TS, "product_id": 1, "digest": D1, "amount": "820", "reason": "placed"},
     OrderOpened),
    ({"type": "order_update", "timestamp": TS, "product_id": 1, "digest": D1, "amount": "0", "reason": "cancelled"},
     OrderClosed),
    ({"type": "order_update", "timestamp": TS, "product_id": 1, "digest": D1, "amount": "0", "reason": "filled"},
     OrderClosed),
    ({"type": "order_update", "timestamp": TS, "product_id": 1, "digest": D1, "amount": "80", "reason": "filled"},
     None),
    ({"type": "fill", "timestamp": TS, "product_id": 1, "subaccount": "0x", "order_digest": D1, "filled_qty": "10",
      "remaining_qty": "20", "original_qty": "30", "price": "24991000000000000000000", "is_taker": True,
      "is_bid": False}, OrderFilled),
    ({"type": "position_change", "timestamp": TS, "product_id": 2, "subaccount": "0x", "amount": "-5",
      "v_quote_amount": "0", "reason": "match_orders"}, PositionObserved),
    ({"type": "trade", "timestamp": TS, "product_id": 1}, None),
    ({"result": None, "id": 4}, None),
]


@pytest.mark.parametrize("frame,expected", TABLE)
def test_stream_table(frame, expected):
    evs = wire.to_events(wire.parse_stream_bytes(orjson.dumps(frame)), venue="v", ts_recv_s=1.5)
    if expected is None:
        assert evs == []
    else:
        assert [type(e) for e in evs] == [expected]
        assert evs[0].ts_recv_s == 1.5
    if expected is OrderClosed:
        assert evs[0].reason == (CloseReason.CANCELED if frame["reason"] == "cancelled" else CloseReason.FILLED)
        assert evs[0].ts_event_ms == 1695081920633
    if expected is OrderFilled:
        assert evs[0].side is Side.SELL and evs[0].price == Decimal(24991)


def test_cash_flows_from_position_change():
    tr = wire.PositionTracker()
    tr.seed(wire.SubaccountInfo(0, 0, {0: 100 * 10**18, 1: 0}, {1: 2000 * 10**18}))
    def pc(pid, amount, reason):
        return wire.PositionChange(1, pid, amount, 0, reason)
    evs = wire.to_events(pc(0, 150 * 10**18, "deposit_collateral"), venue="v", ts_recv_s=0, tracker=tr)
    assert evs == [CashFlowObserved("v", Decimal(50), "USD", 1, 0)]
    evs = wire.to_events(pc(0, 120 * 10**18, "withdraw_collateral"), venue="v", ts_recv_s=0, tracker=tr)
    assert evs[0].amount == Decimal(-30)
    evs = wire.to_events(pc(1, 10**18, "deposit_collateral"), venue="v", ts_recv_s=0, tracker=tr)
    assert evs[0].amount == Decimal(2000) and isinstance(evs[1], PositionObserved)
    evs = wire.to_events(pc(0, 10**18, "match_orders"), venue="v", ts_recv_s=0, tracker=tr)
    assert evs == []  # quote moves from trading are not cash flows


@pytest.mark.parametrize("raw", [b"", b"[", b"null", b"[]", b"{}", b'{"type": 5}', b'{"type":"fill"}',
                                 b'{"type":"order_update","timestamp":"x","product_id":1}',
                                 b'{"type":"order_update","timestamp":"1","product_id":1,"digest":"0x12","amount":"1","reason":"placed"}',
                                 b'{"type":"fill","timestamp":"1","product_id":1,"order_digest":"' + D1.encode()
                                 + b'","filled_qty":"1","remaining_qty":"1","price":"1","is_bid":"yes"}'])
def test_malformed_stream_frames(raw):
    with pytest.raises(wire.WireError):
        wire.parse_stream_bytes(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
keys = st.sampled_from(["type", "status", "data", "error_code", "timestamp", "product_id", "digest", "amount",
                        "reason", "healths", "cancelled_orders", "orders", "product_orders", "is_bid", "id",
                        "order_digest", "filled_qty", "remaining_qty", "price", "chain_id", "endpoint_addr"])
vals = st.one_of(json_values, st.sampled_from(["order_update", "fill", "position_change", "success", "failure",
                                               D1, "1", "-5", "0x", 1, 2**70]))
shaped = st.dictionaries(keys, vals, max_size=10)


@settings(max_examples=400, deadline=None)
@given(obj=st.one_of(json_values, shaped))
def test_fuzz_parsers_raise_only_wire_error(obj):
    raw = json.dumps(obj).encode()
    parsers = [
        lambda: wire.to_events(wire.parse_stream_bytes(raw), venue="v", ts_recv_s=0, tracker=wire.PositionTracker()),
        lambda: wire.parse_response_bytes(raw),
        lambda: wire.parse_cancelled_orders(obj),
        lambda: wire.parse_orders_query(obj),
        lambda: wire.parse_trigger_orders(obj),
        lambda: wire.parse_subaccount_info(obj),
        lambda: wire.parse_contracts(obj),
        lambda: wire.parse_all_products(obj),
        lambda: wire.parse_order(obj),
    ]
    for p in parsers:
        try:
            p()
        except wire.WireError:
            pass


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64))
def test_fuzz_bytes(raw):
    try:
        wire.parse_stream_bytes(raw)
    except wire.WireError:
        pass
