"""The simulated OX.FUN exchange enforces the venue's rules (raw clients over 127.0.0.1)."""

from __future__ import annotations

import httpx
import trio

from killswitch.clock import Clock
from killswitch.venues.oxfun import wire

from .oxfun_fixtures import raw_client, running_sim, wait_until

BTC = "BTC-USD-SWAP-LIN"


def _rest_headers(sim, key, secret, verb, path, body="", *, wall_ms=None, host=None):
    ts = wire.rest_timestamp(wall_ms if wall_ms is not None else Clock().wall_ms())
    return wire.rest_headers(api_key=key, secret=secret, timestamp=ts, nonce="1", verb=verb,
                             host=host or sim.rest_url.split("//")[1], path=path, body=body)


async def test_login_rules_and_double_login():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            async with raw_client(sim) as c:
                assert (await c.login("nope", secret))["code"] == "20025"
            async with raw_client(sim) as c:
                assert (await c.login(key, "bad"))["code"] == "20000"
            async with raw_client(sim) as c:
                assert (await c.login(key, secret, Clock().wall_ms() - 120_000))["code"] == "20024"
            async with raw_client(sim) as c:
                reply = await c.login(key, secret)
                assert reply["success"] is True and reply["tag"] == "t1"
                assert (await c.login(key, secret))["code"] == "20005"
            # A numeric timestamp (what ccxt sends) is accepted too.
            async with raw_client(sim) as c:
                ts = Clock().wall_ms()
                await c.send({"op": "login", "data": {"apiKey": key, "timestamp": ts,
                                                      "signature": wire.login_signature(secret, str(ts))}})
                assert (await c.recv_json(lambda f: f.get("event") == "login"))["success"] is True


async def test_private_ops_before_login_are_rejected():
    with trio.fail_after(10):
        async with running_sim() as sim:
            async with raw_client(sim) as c:
                await c.send({"op": "cancelorder", "tag": 1, "data": {"marketCode": BTC, "orderId": "1"}})
                reply = await c.recv_json()
                assert reply["event"] == "cancelorder" and reply["submitted"] is False and reply["code"] == "05001"
            async with raw_client(sim) as c:
                await c.send({"op": "subscribe", "tag": 2, "args": ["order:all"]})
                reply = await c.recv_json()
                assert reply["success"] is False and reply["code"] == "05001"


async def test_tag_length_frame_length_json_and_rate():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            async with raw_client(sim) as c:
                await c.login(key, secret)
                await c.send({"op": "cancelorder", "tag": "x" * 32, "data": {"marketCode": BTC, "orderId": "1"}})
                assert (await c.recv_json())["code"] == "20034"
                await c.send({"op": "cancelorders", "tag": "big",
                              "dataArray": [{"marketCode": BTC, "orderId": str(10**18 + i)} for i in range(100)]})
                assert (await c.recv_json())["code"] == "20027"
                await c.send('{"op":"placeorder", nope')
                reply = await c.recv_json()
                assert reply["code"] == "20009" and "tag" not in reply and reply["event"] == "placeorder"
                for i in range(60):
                    await c.send({"op": "subscribe", "tag": i, "args": ["ticker:" + BTC]})
                codes = []
                while len(codes) < 60:
                    f = await c.recv_json(lambda f: f.get("event") == "subscribe")
                    codes.append(f.get("code", "ok"))
                assert codes.count("20007") >= 5 and codes[0] == "ok"
            async with raw_client(sim) as c:  # 1 msg/s before login
                await c.send({"op": "subscribe", "tag": 1, "args": ["ticker:" + BTC]})
                await c.send({"op": "subscribe", "tag": 2, "args": ["ticker:" + BTC]})
                replies = [await c.recv_json(lambda f: f.get("event") == "subscribe") for _ in range(2)]
                assert replies[1]["code"] == "20007"


async def test_order_rate_per_account():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            async with raw_client(sim) as c:
                await c.login(key, secret)
                orders = [{"marketCode": BTC, "side": "BUY", "orderType": "LIMIT", "quantity": "1", "price": "1000"}] * 20
                for tag in ("a", "b", "c"):
                    await c.send({"op": "placeorders", "tag": tag, "dataArray": orders})
                acks = []
                while len(acks) < 60:
                    acks.append(await c.recv_json(lambda f: f.get("event") == "placeorder"))
                assert sum(a["submitted"] for a in acks) == 50
                assert {a["code"] for a in acks if not a["submitted"]} == {"20007"}


async def test_fanout_to_every_connection_and_ping():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            async with raw_client(sim) as a, raw_client(sim) as b:
                await a.login(key, secret)
                await b.login(key, secret)
                await b.send({"op": "subscribe", "tag": 1, "args": ["order:" + "ETH-USD-SWAP-LIN"]})
                await b.recv_json(lambda f: f.get("event") == "subscribe")
                (oid,) = await sim.place_orders(key, market=BTC, price="1000")
                for c in (a, b):
                    push = await c.recv_json(lambda f: f.get("table") == "order")
                    assert push["data"][0]["orderId"] == oid and push["data"][0]["notice"] == "OrderOpened"
                await a.send("ping")
                with trio.fail_after(2):
                    assert await a.ws.get_message() == "pong"
                # REST cancel-all: per-order OrderClosed, then the CANCEL event, on both sockets.
                path = "/v3/orders/cancel-all"
                async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                    r = await http.request("DELETE", path, headers=_rest_headers(sim, key, secret, "DELETE", path))
                assert r.json()["data"]["notice"] == "Orders queued for cancelation"
                for c in (a, b):
                    closed = await c.recv_json(lambda f: f.get("table") == "order")
                    assert closed["data"][0]["status"] == "CANCELED_BY_USER"
                    assert (await c.recv_json(lambda f: f.get("event") == "CANCEL"))["submitted"] is True


async def test_rest_signature_window_and_rate_limit():
    with trio.fail_after(10):
        async with running_sim(rest_rate=20) as sim:
            key, secret = sim.add_account()
            path = "/v3/orders/working"
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                ok = await http.get(path + "?marketCode=" + BTC,
                                    headers=_rest_headers(sim, key, secret, "GET", path, "marketCode=" + BTC))
                assert ok.status_code == 200 and ok.json() == {"success": True, "data": []}
                bad = await http.get(path, headers=_rest_headers(sim, key, "wrong", "GET", path))
                assert bad.status_code == 401 and bad.json()["code"] == "20000"
                wrong_host = await http.get(path, headers=_rest_headers(sim, key, secret, "GET", path, host="api.ox.fun"))
                assert wrong_host.json()["code"] == "20000"
                old = await http.get(path, headers=_rest_headers(sim, key, secret, "GET", path, wall_ms=Clock().wall_ms() - 600_000))
                assert old.json()["code"] == "20024"
                statuses = [
                    (await http.get(path, headers=_rest_headers(sim, key, secret, "GET", path))).status_code for _ in range(25)
                ]
                assert 429 in statuses


async def test_admin_api_drives_the_sim():
    with trio.fail_after(10):
        async with running_sim() as sim:
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                acct = (await http.post("/admin/accounts", json={"balances": {"OX": "500"}})).json()
                key = acct["api_key"]
                placed = (await http.post("/admin/orders", json={"api_key": key, "market": BTC, "side": "SELL",
                                                                 "price": "70000", "qty": "0.1", "count": 7})).json()
                assert len(placed["order_ids"]) == 7
                stops = (await http.post("/admin/orders", json={"api_key": key, "market": BTC, "side": "SELL",
                                                                "order_type": "STOP_MARKET", "stop_price": "50000"})).json()
                orders = (await http.get("/admin/orders", params={"api_key": key})).json()["orders"]
                assert len(orders) == 8 and any(o["orderType"] == "STOP_MARKET" and o["isTriggered"] is False for o in orders)
                assert (await http.post("/admin/marks", json={BTC: "49000"})).json()["success"]
                # The mark crossed the stop: it triggered and filled -> a short position.
                state = (await http.get("/admin/state")).json()
                assert state["accounts"][key]["open_orders"] == 7
                assert state["accounts"][key]["positions"][BTC]["qty"] == "-1"
                assert stops["order_ids"][0] not in {o["orderId"] for o in sim.open_orders(key)}
                assert (await http.post("/admin/balances", json={"api_key": key, "balances": {"USDT": "10"}})).json()["success"]
                assert (await http.post("/admin/positions", json={"api_key": key, "positions": {
                    "ETH-USD-SWAP-LIN": {"qty": "2", "entry_price": "2900"}}})).json()["success"]
                assert (await http.post("/admin/faults", json={"fault": "pong", "enabled": False})).json()["success"]
                assert sim.faults.pong_enabled is False
                bad = await http.post("/admin/faults", json={"fault": "nonsense"})
                assert bad.status_code == 400
                state = (await http.get("/admin/state")).json()
                assert state["accounts"][key]["balances"]["USDT"] == "10"


async def test_idle_connection_closed_and_abort_is_1006():
    with trio.fail_after(10):
        async with running_sim(idle_timeout_s=0.3) as sim:
            key, secret = sim.add_account()
            from trio_websocket import ConnectionClosed

            async with raw_client(sim) as c:
                await c.login(key, secret)
                try:
                    with trio.fail_after(3):
                        while True:
                            await c.ws.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason.code == 1000
            received = []
            sim.on_cancel_received = lambda t, tag, n: received.append((tag, n))
            async with raw_client(sim) as c:
                await c.login(key, secret)
                await c.send({"op": "cancelorders", "tag": "z", "dataArray": [{"marketCode": BTC, "orderId": "1"}]})
                await c.recv_json(lambda f: f.get("event") == "cancelorder")
                assert received == [("z", 1)]
                await sim.drop_connections(key)
                try:
                    with trio.fail_after(3):
                        while True:
                            await c.ws.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason.code == 1006
            await wait_until(lambda: sim.state()["connections"] == 0)
