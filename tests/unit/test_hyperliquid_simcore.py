"""The simulated venue's rules, on the pure core (time passed in): scheduleCancel's daily
firings, agent approval rules, the open-order cap, batch element errors."""

from __future__ import annotations

from decimal import Decimal

import pytest

from killswitch.venues.hyperliquid import signing, wire
from killswitch.venues.hyperliquid.sim.core import DAY_MS, SimCore

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
MASTER_KEY = "0x" + "a1" * 32
MASTER = signing.FastSigner(MASTER_KEY).address


def core(**kw) -> SimCore:
    c = SimCore(network=signing.TESTNET, **kw)
    c.add_account(MASTER, cum_vlm=Decimal(2_000_000))
    return c


def l1(c: SimCore, action: dict, nonce: int, now_ms: int | None = None, key: str = MASTER_KEY, **body) -> dict:
    # a client that signs the canonical form may post the keys in any order
    sig, _ = signing.sign_l1(signing.FastSigner(key), wire.canonical_action(action), nonce, c.network)
    reply, _ = c.exchange({"action": action, "nonce": nonce, "signature": sig.to_wire(), **body},
                          now_ms if now_ms is not None else nonce)
    return reply


def approve(c: SimCore, agent: str, name: str, nonce: int, *, chain: str = "Testnet", key: str = MASTER_KEY,
            **body) -> dict:
    action = wire.approve_agent_action(agent, name, body.pop("action_nonce", nonce), hyperliquid_chain=chain,
                                       signature_chain_id="0x66eee")
    digest = signing.approve_agent_digest(hyperliquid_chain=chain, agent_address=agent, agent_name=name,
                                          nonce=action["nonce"], signature_chain_id=0x66EEE)
    sig = signing.FastSigner(key).sign_digest(digest)
    reply, _ = c.exchange({"action": action, "nonce": nonce, "signature": sig.to_wire(), **body}, nonce)
    return reply


def test_schedule_cancel_fires_at_most_ten_times_per_utc_day():
    c = core()
    acct = c.accounts[MASTER]
    fired = 0
    for i in range(11):
        t = T0 + i * 60_000
        acct.orders.clear()
        c._place(acct, {"a": 1, "b": True, "p": "2000", "s": "0.1", "r": False, "t": {"limit": {"tif": "Gtc"}}}, t, [])
        assert l1(c, wire.schedule_cancel_action(t + 5_000), t)["status"] == "ok"
        c.tick(t + 5_000)
        fired += not acct.orders
    assert fired == 10 and acct.dms_fired_today == 10 and len(acct.orders) == 1
    # next UTC day: the budget is back
    t = T0 + DAY_MS + 1000
    assert l1(c, wire.schedule_cancel_action(t + 5_000), t)["status"] == "ok"
    c.tick(t + 5_000)
    assert not acct.orders and acct.dms_fired_today == 1


def test_schedule_cancel_clear_and_minimum_ahead():
    c = core()
    assert l1(c, wire.schedule_cancel_action(T0 + 4_999), T0)["response"].startswith("Scheduled cancel time too early")
    assert l1(c, wire.schedule_cancel_action(T0 + 10_000), T0 + 1)["status"] == "ok"
    assert l1(c, wire.schedule_cancel_action(None), T0 + 2)["status"] == "ok"
    assert c.accounts[MASTER].dms_time_ms is None


def test_agent_approval_rules():
    c = core(agent_removal_cooldown_ms=5_000)
    a = [signing.FastSigner("0x" + f"{i:02x}" * 32).address for i in range(1, 8)]
    assert approve(c, a[0], "one", T0)["status"] == "ok"
    assert approve(c, a[1], "two", T0 + 1)["status"] == "ok"
    assert approve(c, a[2], "three", T0 + 2)["status"] == "ok"
    assert approve(c, a[3], "four", T0 + 3)["response"] == \
        "Too many extra agents for cumulative volume traded. Current limit is 3"
    assert approve(c, a[3], "x" * 17, T0 + 4)["response"] == \
        "Extra agent name must be between 1 and 16 characters long."
    assert approve(c, a[3], "one", T0 + 5)["status"] == "ok"  # replaces agent "one"
    assert a[0] not in c.agents
    assert approve(c, a[4], "two", T0 + 6)["response"] == "User has pending agent removal"
    other = signing.FastSigner("0x" + "e1" * 32).address
    c.add_account(other)
    assert approve(c, a[1], "mine", T0 + 7, key="0x" + "e1" * 32)["response"] == "Extra agent already used"
    assert approve(c, a[5], "v", T0 + 10_000, chain="Mainnet")["response"] == \
        "Mainnet and testnet require different signature."
    assert approve(c, a[5], "v", T0 + 10_001, vaultAddress=other)["response"] == "Vault may not perform this action."
    assert approve(c, a[5], "v", T0 + 10_002, action_nonce=T0)["response"].startswith("Invalid nonce")
    nobody = "0x" + "99" * 32
    assert approve(c, a[5], "v", T0 + 10_003, key=nobody)["response"] == \
        f"Must deposit before performing actions. User: {signing.FastSigner(nobody).address}"
    # an agent's validity is on the injected clock
    assert approve(c, a[6], f"two valid_until {T0 + 20_000}", T0 + 10_004)["status"] == "ok"
    agent_key = "0x" + "07" * 32
    assert l1(c, {"type": "noop"}, T0 + 19_000, key=agent_key)["status"] == "ok"
    assert "does not exist" in l1(c, {"type": "noop"}, T0 + 20_001, key=agent_key)["response"]


def test_cancel_elements_wrong_asset_and_fast_trigger():
    c = core()
    acct = c.accounts[MASTER]
    c._place(acct, {"a": 1, "b": True, "p": "2000", "s": "0.1", "r": False, "t": {"limit": {"tif": "Gtc"}}}, T0, [])
    c._place(acct, {"a": 1, "b": False, "p": "2000", "s": "0.1", "r": True,
                    "t": {"trigger": {"isMarket": True, "triggerPx": "1900", "tpsl": "sl"}}}, T0, [])
    resting, trig = sorted(acct.orders)
    r = l1(c, wire.cancel_action([(2, resting), (1, trig)], fast=True), T0)
    st = r["response"]["data"]["statuses"]
    assert st[0] == {"error": "Order was never placed, already canceled, or filled. asset=2"}
    assert "trigger" in st[1]["error"]
    r = l1(c, wire.cancel_action([(1, resting), (1, trig)], fast=False), T0 + 1)
    assert r["response"]["data"]["statuses"] == ["success", "success"] and not acct.orders


def test_open_order_cap_refuses_reduce_only_and_triggers():
    c = core(open_order_cap=2)
    acct = c.accounts[MASTER]
    for _ in range(2):
        c._place(acct, {"a": 1, "b": True, "p": "2000", "s": "0.1", "r": False, "t": {"limit": {"tif": "Gtc"}}}, T0, [])
    r = l1(c, {"type": "order", "grouping": "na", "orders": [
        {"a": 1, "b": False, "p": "2000", "s": "0.1", "r": True, "t": {"limit": {"tif": "Gtc"}}}]}, T0)
    assert r["response"]["data"]["statuses"] == [{"error": "Too many open orders. asset=1"}]


@pytest.mark.parametrize("price, size, error", [
    ("2000.123456", "0.1", "Price must be divisible by tick size."),
    ("2000", "0.00001", "Order has invalid size."),
    ("10", "0.1", "Order must have minimum value of $10."),
])
def test_order_validation_texts(price, size, error):
    c = core()
    r = l1(c, {"type": "order", "grouping": "na", "orders": [
        {"a": 1, "b": True, "p": price, "s": size, "r": False, "t": {"limit": {"tif": "Gtc"}}}]}, T0)
    assert r["response"]["data"]["statuses"] == [{"error": f"{error} asset=1"}]
