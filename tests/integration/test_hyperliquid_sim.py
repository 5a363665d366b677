"""The Hyperliquid simulator driven by the official SDK (hyperliquid-python-sdk 0.24.0) over
real sockets, plus tampered signatures, nonces, budgets, agents and scheduleCancel rules."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest
import trio

eth_account = pytest.importorskip("eth_account")
hl_exchange = pytest.importorskip("hyperliquid.exchange", reason="hyperliquid-python-sdk not installed")

from killswitch.venues.hyperliquid import signing, wire  # noqa: E402
from killswitch.venues.hyperliquid.sim.server import HyperliquidSim  # noqa: E402

MASTER_KEY = "0x" + "11" * 32
AGENT_KEY = "0x" + "22" * 32


def _sdk(sim, key, **kw):
    from hyperliquid.exchange import Exchange

    return Exchange(eth_account.Account.from_key(key), base_url=sim.rest_url, **kw)


async def _serve(nursery, **kw) -> HyperliquidSim:
    sim = HyperliquidSim(**kw)
    await nursery.start(sim.serve)
    master = eth_account.Account.from_key(MASTER_KEY).address
    sim.core.add_account(master, usdc=Decimal(10_000), cum_vlm=Decimal(2_000_000))
    return sim


async def test_sdk_places_lists_cancels_and_schedules_cancel_on_testnet_sim():
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n)
            master = eth_account.Account.from_key(MASTER_KEY).address

            def flow():
                ex = _sdk(sim, MASTER_KEY)
                placed = ex.order("ETH", True, 0.1, 2000.0, {"limit": {"tif": "Gtc"}})
                assert placed["status"] == "ok", placed
                oid = placed["response"]["data"]["statuses"][0]["resting"]["oid"]
                listed = ex.info.open_orders(master)
                front = ex.info.frontend_open_orders(master)
                cancelled = ex.cancel("ETH", oid)
                again = ex.cancel("ETH", oid)
                sched = ex.schedule_cancel(int(time.time() * 1000) + 10_000)
                early = ex.schedule_cancel(int(time.time() * 1000) + 1_000)
                return oid, listed, front, cancelled, again, sched, early

            oid, listed, front, cancelled, again, sched, early = await trio.to_thread.run_sync(flow)
            assert [o["oid"] for o in listed] == [oid]
            assert front[0]["isTrigger"] is False and front[0]["orderType"] == "Limit"
            assert cancelled["response"]["data"]["statuses"] == ["success"]
            assert again["response"]["data"]["statuses"][0]["error"].startswith(wire.NOT_FOUND_PREFIX)
            assert sched == {"status": "ok", "response": {"type": "default"}}
            assert early["status"] == "err" and "5 seconds" in early["response"]
            n.cancel_scope.cancel()


async def test_sdk_signing_against_a_mainnet_sim_is_refused_as_another_address():
    # The SDK signs testnet for any base_url but the real one: a mainnet sim recovers a
    # different address and answers with the venue's own text.
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n, network=signing.MAINNET)
            r = await trio.to_thread.run_sync(lambda: _sdk(sim, MASTER_KEY).cancel("ETH", 1))
            master = eth_account.Account.from_key(MASTER_KEY).address.lower()
            assert r["status"] == "err"
            m = wire.DOES_NOT_EXIST_RE.search(r["response"])
            assert r["response"].startswith("L1 error: User or API Wallet 0x") and m and m.group(1) != master
            n.cancel_scope.cancel()


async def test_sdk_approves_an_agent_which_then_trades_and_is_revoked_by_name():
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n, agent_removal_cooldown_ms=0)
            master = eth_account.Account.from_key(MASTER_KEY).address

            def flow():
                ex = _sdk(sim, MASTER_KEY)
                r1, agent_key = ex.approve_agent("strategy")
                agent_ex = _sdk(sim, agent_key, account_address=master)
                placed = agent_ex.order("BTC", False, 0.001, 70000.0, {"limit": {"tif": "Gtc"}})
                r2, _ = ex.approve_agent("strategy")  # same name: the first agent is deregistered
                refused = agent_ex.order("BTC", False, 0.001, 70000.0, {"limit": {"tif": "Gtc"}})
                return r1, placed, r2, refused, eth_account.Account.from_key(agent_key).address.lower()

            r1, placed, r2, refused, agent_addr = await trio.to_thread.run_sync(flow)
            assert r1 == {"status": "ok", "response": {"type": "default"}}
            assert "resting" in placed["response"]["data"]["statuses"][0]
            assert r2["status"] == "ok"
            assert refused == {"status": "err",
                               "response": f"L1 error: User or API Wallet {agent_addr} does not exist."}
            # its resting order stays
            assert len(sim.core.accounts[master.lower()].orders) == 1
            n.cancel_scope.cancel()


async def _post(sim, path, body):
    async with httpx.AsyncClient() as c:
        return await c.post(sim.rest_url + path, content=body if isinstance(body, bytes) else None,
                            json=None if isinstance(body, bytes) else body)


def _signed(action, nonce, key=MASTER_KEY, network=signing.TESTNET, **kw):
    sig, _ = signing.sign_l1(signing.FastSigner(key), action, nonce, network, **kw)
    return wire.encode_exchange(action, nonce, sig.to_wire(), vault_address=kw.get("vault_address"),
                                expires_after_ms=kw.get("expires_after_ms"))


async def test_tampered_signature_and_f_false_recover_other_addresses():
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n)
            now = int(time.time() * 1000)
            body = _signed(wire.cancel_action([(1, 5)], fast=True), now)
            tampered = body.replace(b'"o":5', b'"o":6')
            r = (await _post(sim, "/exchange", tampered)).json()
            assert r["status"] == "err" and "does not exist." in r["response"]
            # f:false signed by a client that hashes it literally: the venue's canonical form differs
            action = {"type": "cancel", "cancels": [{"a": 1, "o": 5}], "f": False}
            ok = (await _post(sim, "/exchange", _signed(wire.cancel_action([(1, 5)], fast=False), now + 1))).json()
            assert ok["status"] == "ok"
            bad_sig = (await _post(sim, "/exchange", body.replace(b'"v":2', b'"v":3'))).json()
            assert bad_sig == {"status": "err", "response": "Unable to recover signer."}
            assert (await _post(sim, "/exchange", b'{"action":{}}')).status_code == 422
            del action
            n.cancel_scope.cancel()


async def test_nonce_set_rules_duplicate_too_low_and_window():
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n)
            now = int(time.time() * 1000)
            noop = {"type": "noop"}
            assert (await _post(sim, "/exchange", _signed(noop, now))).json()["status"] == "ok"
            dup = (await _post(sim, "/exchange", _signed(noop, now))).json()
            assert dup == {"status": "err", "response": f"Invalid nonce: duplicate nonce {now}"}
            for i in range(1, 101):
                sim.core._use_nonce(eth_account.Account.from_key(MASTER_KEY).address.lower(), now + i)
            low = (await _post(sim, "/exchange", _signed(noop, now - 5))).json()
            assert low["response"].startswith("Invalid nonce: nonce too low")
            future = (await _post(sim, "/exchange", _signed(noop, now + 2 * 86_400_000))).json()
            assert future["response"].startswith("Invalid nonce: nonce too high")
            expired = (await _post(sim, "/exchange", _signed(noop, now + 500, expires_after_ms=now - 1))).json()
            assert expired == {"status": "err", "response": "Action already expired"}
            n.cancel_scope.cancel()


async def test_schedule_cancel_volume_gate_text_and_firing_cancels_everything():
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n)
            poor = "0x" + "33" * 32
            poor_addr = signing.FastSigner(poor).address
            sim.core.add_account(poor_addr, cum_vlm=Decimal("373.47205"))
            now = int(time.time() * 1000)
            r = (await _post(sim, "/exchange", _signed(wire.schedule_cancel_action(now + 6000), now, key=poor))).json()
            assert r == {"status": "err", "response": "Cannot set scheduled cancel time until enough volume traded. "
                                                      "Required: $1000000. Traded: $373.47205."}
            master = eth_account.Account.from_key(MASTER_KEY).address
            sim.place(master, "ETH", is_buy=True, price="2000", size="0.1", count=3)
            sim.place(master, "ETH", is_buy=False, price="2000", size="0.1",
                      trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"}, reduce_only=True)
            fire_at = int(time.time() * 1000) + 5_300
            r = (await _post(sim, "/exchange", _signed(wire.schedule_cancel_action(fire_at), now + 1))).json()
            assert r["status"] == "ok"
            acct = sim.core.accounts[master.lower()]
            while acct.orders:
                await trio.sleep(0.05)
            assert int(time.time() * 1000) >= fire_at
            assert {h[1] for h in acct.history.values()} == {"scheduledCancel"}
            assert acct.dms_time_ms is None and acct.dms_fired_today == 1
            n.cancel_scope.cancel()


async def test_address_budget_allows_extra_cancels_then_one_per_10s():
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n)
            master = eth_account.Account.from_key(MASTER_KEY).address.lower()
            acct = sim.core.accounts[master]
            acct.cum_vlm = Decimal(0)
            acct.requests_used = 10_000  # the plain cap is used up: cancels may go on to 20 000
            now = int(time.time() * 1000)
            order = wire.limit_order_action(1, True, Decimal(2000), Decimal("0.1"))
            r = (await _post(sim, "/exchange", _signed(order, now))).json()
            assert r["status"] == "ok"  # the first one past the cap is the 1-per-10-s allowance
            r = (await _post(sim, "/exchange", _signed(order, now + 1))).json()
            assert r["response"].startswith("Too many cumulative requests sent (10002 > 10000)")
            c = (await _post(sim, "/exchange", _signed(wire.cancel_action([(1, 1)], fast=True), now + 2))).json()
            assert c["status"] == "ok"
            n.cancel_scope.cancel()


async def test_ws_limits_connections_users_already_subscribed_and_posts():
    import orjson

    from killswitch.net import ws as wsmod

    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await _serve(n)
            eps = [await wsmod.connect(sim.ws_url, deflate=False, timeout_s=5) for _ in range(10)]
            with pytest.raises(wsmod.WsHandshakeRejected):
                await wsmod.connect(sim.ws_url, deflate=False, timeout_s=5)
            ep = eps[0]

            async def ask(obj) -> dict:
                await ep.send_text(orjson.dumps(obj))
                return orjson.loads(await ep.receive())

            for i in range(10):
                r = await ask({"method": "subscribe", "subscription": {"type": "orderUpdates", "user": f"0x{i:040x}"}})
                assert r["channel"] == "subscriptionResponse"
            r = await ask({"method": "subscribe", "subscription": {"type": "orderUpdates", "user": "0x" + "f" * 40}})
            assert r == {"channel": "error", "data": "Cannot track more than 10 total users."}
            r = await ask({"method": "subscribe", "subscription": {"type": "orderUpdates", "user": f"0x{0:040x}"}})
            assert r["channel"] == "error" and r["data"].startswith("Already subscribed:")
            r = await ask({"method": "nonsense"})
            assert r["channel"] == "error" and r["data"].startswith("Error parsing JSON into valid websocket request")
            r = await ask({"method": "post", "id": 7, "request": {"type": "info", "payload": {"type": "meta"}}})
            assert r["channel"] == "post" and r["data"]["id"] == 7 and r["data"]["response"]["type"] == "info"
            # a refused action over WS keeps type "action"
            r = await ask({"method": "post", "id": 8, "request": {"type": "action", "payload": orjson.loads(
                _signed({"type": "noop"}, int(time.time() * 1000), key="0x" + "44" * 32))}})
            assert r["data"]["response"]["type"] == "action" and r["data"]["response"]["payload"]["status"] == "err"
            for e in eps:
                await e.abort()
            n.cancel_scope.cancel()
