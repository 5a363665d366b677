"""Hypothesis fuzzing of the Hyperliquid parsers and the simulator's request handling: they may
only return typed results or raise their typed errors (WireError; the sim's BadBody = HTTP 422,
or a status:"err" reply). Anything else is a bug."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.venues.hyperliquid import feed, signing, wire
from killswitch.venues.hyperliquid.sim.core import BadBody, SimCore

scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=10), st.sampled_from(["", "0", "-1", "1e999", "NaN", "12ab", "9" * 300, "A", "B",
                                                          "0x" + "ab" * 16, "0x" + "cd" * 20, "open", "canceled"]))
json_any = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                        max_leaves=20)
ORDER_KEYS = ["coin", "side", "limitPx", "sz", "oid", "timestamp", "origSz", "cloid", "isTrigger", "reduceOnly",
              "children", "triggerPx", "orderType", "tif"]
order_like = st.dictionaries(st.sampled_from(ORDER_KEYS), scalar, max_size=10)
frame_like = st.fixed_dictionaries(
    {"channel": st.sampled_from(["orderUpdates", "user", "userFills", "clearinghouseState", "pong", "error", "x"])},
    optional={"data": st.one_of(json_any, st.lists(st.fixed_dictionaries(
        {"order": order_like, "status": st.one_of(scalar, st.sampled_from(["open", "filled", "scheduledCancel"]))}),
        max_size=3), st.fixed_dictionaries({"fills": st.lists(st.dictionaries(st.sampled_from(
            ["coin", "px", "sz", "side", "oid", "time"]), scalar), max_size=3)}, optional={"isSnapshot": scalar}))})
ACTION_KEYS = ["type", "cancels", "orders", "grouping", "f", "time", "a", "t", "twap", "builder"]
action_like = st.one_of(json_any, st.dictionaries(st.sampled_from(ACTION_KEYS), st.one_of(
    scalar, st.sampled_from(["cancel", "cancelByCloid", "order", "scheduleCancel", "noop", "twapCancel"]),
    st.lists(st.dictionaries(st.sampled_from(["a", "o", "asset", "cloid", "b", "p", "s", "r", "t", "c"]), scalar),
             max_size=3)), max_size=5))


@settings(max_examples=1500, deadline=None)
@given(obj=json_any)
def test_fuzz_info_and_reply_parsers(obj):
    for fn in (wire.parse_exchange_reply, wire.parse_frontend_open_orders, wire.parse_clearinghouse_state,
               wire.parse_spot_usd, wire.parse_asset_map, wire.parse_twap_states):
        try:
            fn(obj)
        except wire.WireError:
            pass


@settings(max_examples=1500, deadline=None)
@given(obj=st.one_of(frame_like, json_any))
def test_fuzz_ws_frames_to_events(obj):
    import orjson

    state = feed.FeedState("hl")
    try:
        raw = orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return
    try:
        f = wire.parse_ws_frame(raw)
        if f is not None:
            state.frame(f, spot_usd=0, now_ms=0, ts_s=0.0)
    except wire.WireError:
        pass


@settings(max_examples=800, deadline=None)
@given(action=action_like, nonce=st.one_of(st.integers(0, 2**64), scalar), sig=st.one_of(json_any, st.fixed_dictionaries(
    {"r": st.sampled_from(["0x1", "0x" + "f" * 64, "zz", ""]), "s": st.sampled_from(["0x2", "0x0"]),
     "v": st.sampled_from([27, 28, 0, "27"])})))
def test_fuzz_sim_exchange_answers_422_or_a_json_reply(action, nonce, sig):
    core = SimCore(network=signing.TESTNET)
    try:
        reply, _ = core.exchange({"action": action, "nonce": nonce, "signature": sig}, 1_767_225_600_000)
    except BadBody:
        return
    assert reply["status"] in ("ok", "err")


@settings(max_examples=500, deadline=None)
@given(body=st.one_of(json_any, st.fixed_dictionaries({"type": st.sampled_from(
    ["openOrders", "frontendOpenOrders", "orderStatus", "clearinghouseState", "userRateLimit", "meta", "x"])},
    optional={"user": scalar, "oid": scalar, "dex": scalar})))
def test_fuzz_sim_info(body):
    try:
        SimCore().info(body, 0)
    except BadBody:
        pass
