"""Hypothesis fuzzing of what the existing unit fuzzers do not cover: OX.FUN REST reply parsers,
OX.FUN frames shaped like real ones (right keys, hostile values), the config loader on mutated
*valid* configs, and a nonce property over long runs. Parsers may only return typed results or
raise their typed errors (``WireError`` / ``ConfigError``); anything else is a bug.

Already covered elsewhere (referenced in README "Reliability and security"): tests/unit/test_oxfun_wire.py
(parse_frame on random JSON/text), tests/unit/test_vertex_wire.py (stream/response/query
parsers), tests/unit/test_config.py (random text, structured mutations), tests/unit/test_vertex_signing.py
(fast signer == eth-account typed-data signer, every struct), tests/unit/test_vertex_nonce.py.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killswitch.config import ConfigError, load_config_text
from killswitch.venues.oxfun import wire as ox
from killswitch.venues.vertex import nonce as vnonce

EXAMPLES = {"ox_rest": 1500, "ox_frames": 2000, "config": 600, "nonce": 200}

scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=12), st.sampled_from(["", "0", "-1", "1e999", "NaN", "Infinity", "12ab",
                                                          "9" * 400, "BTC-USD-SWAP-LIN", "OPEN", "true"]))
json_any = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                        max_leaves=20)
ORDER_KEYS = ["orderId", "clientOrderId", "marketCode", "side", "orderType", "price", "quantity", "remainQuantity",
              "status", "notice", "timestamp", "isTriggered", "stopPrice", "timeInForce", "matchQuantity",
              "matchPrice", "accountId", "source", "lastMatchQuantity", "reduceOnly", "code", "message"]
order_like = st.dictionaries(st.sampled_from(ORDER_KEYS), scalar, max_size=14)
acct_like = st.dictionaries(st.sampled_from(["accountId", "name", "balances", "positions"]),
                            st.one_of(scalar, st.lists(st.dictionaries(st.sampled_from(
                                ["asset", "total", "available", "marketCode", "position", "entryPrice",
                                 "positionPnl", "markPrice"]), scalar, max_size=6), max_size=3)), max_size=4)
rest_reply = st.one_of(
    json_any,
    st.fixed_dictionaries({"success": st.one_of(st.booleans(), scalar)},
                          optional={"data": st.one_of(scalar, st.lists(st.one_of(order_like, acct_like), max_size=4),
                                                      order_like), "code": scalar, "message": scalar}),
)


@settings(max_examples=EXAMPLES["ox_rest"], deadline=None)
@given(obj=rest_reply)
def test_fuzz_oxfun_rest_parsers(obj):
    for fn in (lambda: ox.parse_working_orders(obj, "ox"), lambda: ox.parse_balances(obj),
               lambda: ox.parse_positions(obj), lambda: ox.parse_rest_cancel_results(obj), lambda: ox.rest_error_of(obj)):
        try:
            fn()
        except ox.WireError:
            pass


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=40), st.integers().map(str)))
def test_fuzz_oxfun_rest_timestamp(text):
    try:
        assert isinstance(ox.parse_rest_timestamp(text), int)
    except ox.WireError:
        pass


frame_like = st.one_of(
    st.fixed_dictionaries({"table": st.sampled_from(["order", "balance", "position", "ticker", "depth", "x"]),
                           "data": st.one_of(scalar, st.lists(order_like, max_size=3), order_like)}),
    st.fixed_dictionaries({"event": st.sampled_from(["login", "subscribe", "cancelorder", "placeorder", "CANCEL",
                                                     "Welcome", "modifyorder", "??"]),
                           "submitted": scalar, "success": scalar, "tag": scalar, "code": scalar,
                           "data": st.one_of(scalar, order_like)}),
)


@settings(max_examples=EXAMPLES["ox_frames"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(obj=frame_like, cut=st.integers(0, 400))
def test_fuzz_oxfun_shaped_frames_never_raise(obj, cut):
    try:
        text = json.dumps(obj)
    except (ValueError, OverflowError):
        return
    for t in (text, text[:cut]):  # whole and truncated
        out = ox.parse_frame(t, "ox", 0.0)
        assert isinstance(out, list)


VALID = """\
daemon:
  state_dir: /tmp/ks-fuzz
  tick_interval: 100ms
venues:
  - name: ox-main
    kind: oxfun
    api_key: {env: OX_KEY}
    api_secret: {env: OX_SECRET}
    markets: [BTC-USD-SWAP-LIN]
  - name: nado-main
    kind: nado
    private_key: {env: NADO_KEY}
    products: [2]
rules:
  - name: dd
    kind: drawdown
    max_drawdown: 5%
  - {name: mo, kind: max_open_orders, max: 10}
"""


@settings(max_examples=EXAMPLES["config"], deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_config_mutations_of_a_valid_file(data):
    text = VALID
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        junk = data.draw(st.sampled_from(["", ":", "-", "{", "}", "[", "\n", "  ", "!!python/object:os.system",
                                          "&a", "*a", "<<: *a", "%", "\t", "0x", "1e999", "'", '"', "~", "\x00",
                                          "../../etc", "{file: /etc/shadow}"]) | st.text(max_size=4))
        if op == "delete":
            text = text[:i] + text[i + data.draw(st.integers(1, 8)):]
        elif op == "insert":
            text = text[:i] + junk + text[i:]
        else:
            text = text[:i] + junk + text[i + 1:]
    try:
        load_config_text(text, "fuzz.yaml")
    except ConfigError:
        pass


@settings(max_examples=EXAMPLES["nonce"], deadline=None)
@given(offset_ms=st.integers(1, vnonce.MAX_RECV_AHEAD_MS), start=st.integers(1_600_000_000_000, 2_000_000_000_000),
       steps=st.lists(st.integers(0, 3), min_size=50, max_size=400))
def test_nonces_unique_and_inside_the_window(offset_ms, start, steps):
    src = vnonce.NonceSource(recv_offset_ms=offset_ms)
    now = start
    seen = set()
    for s in steps:
        now += s  # many nonces within the same millisecond
        n = src.next(now)
        value = int(getattr(n, "value", n))
        assert value not in seen
        seen.add(value)
        recv_time = value >> 20
        assert now < recv_time <= now + vnonce.MAX_RECV_AHEAD_MS
