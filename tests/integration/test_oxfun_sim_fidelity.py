"""The OX.FUN simulator refuses what the venue's docs say the venue refuses (issue #13 items 7, 10).

Raw clients over 127.0.0.1: each test shows a request the sim used to accept.
"""

from __future__ import annotations

import httpx
import orjson
import trio

from killswitch.clock import Clock
from killswitch.secrets import Secret
from killswitch.venues.oxfun import wire
from killswitch.venues.oxfun.session import OxfunSession

from .oxfun_fixtures import make_config, raw_client, running_sim

BTC = "BTC-USD-SWAP-LIN"
CANCEL = "/v3/orders/cancel"


async def _rest_cancel(sim, key: str, secret: str, body: dict) -> httpx.Response:
    text = orjson.dumps(body).decode()
    headers = wire.rest_headers(api_key=key, secret=secret, timestamp=wire.rest_timestamp(Clock().wall_ms()),
                                nonce="1", verb="DELETE", host=sim.rest_url.split("//")[1], path=CANCEL, body=text)
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        return await http.request("DELETE", CANCEL, content=text.encode(), headers=headers)


def _body(order_id: str, **fields) -> dict:
    return {**fields, "orders": [{"marketCode": BTC, "orderId": order_id}]}


async def test_rest_cancel_outside_recv_window_is_refused_and_the_order_stays_open():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            (oid,) = await sim.place_orders(key, market=BTC, price="50000")
            now = Clock().wall_ms()
            r = await _rest_cancel(sim, key, secret,
                                   _body(oid, timestamp=now - 60_000, recvWindow=1000, responseType="FULL"))
            assert r.json()["success"] is False and r.json()["code"] == "100015", r.text
            assert "recvWindow" in r.json()["message"]
            # Far in the future is refused too (a client clock running ahead).
            r = await _rest_cancel(sim, key, secret,
                                   _body(oid, timestamp=now + 60_000, recvWindow=1000, responseType="FULL"))
            assert r.json()["success"] is False, r.text
            assert [o["orderId"] for o in sim.open_orders(key)] == [oid]
            # Inside the window the same cancel works.
            r = await _rest_cancel(sim, key, secret,
                                   _body(oid, timestamp=Clock().wall_ms(), recvWindow=5000, responseType="FULL"))
            assert r.json()["success"] is True and r.json()["data"][0]["submitted"] is True, r.text
            assert sim.open_orders(key) == []


async def test_rest_cancel_requires_timestamp_and_response_type():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            (oid,) = await sim.place_orders(key, market=BTC, price="50000")
            now = Clock().wall_ms()
            for body, missing in ((_body(oid, responseType="FULL"), "timestamp"),
                                  (_body(oid, timestamp=now), "responseType")):
                r = await _rest_cancel(sim, key, secret, body)
                assert r.json() == {"success": False, "code": "30001",
                                    "message": f"Required parameter '{missing}' is missing"}, r.text
            r = await _rest_cancel(sim, key, secret, _body(oid, timestamp=now, responseType="SOME"))
            assert r.json()["success"] is False and r.json()["code"] == "20001", r.text
            r = await _rest_cancel(sim, key, secret, _body(oid, timestamp="yesterday", responseType="FULL"))
            assert r.json()["success"] is False and r.json()["code"] == "20001", r.text
            assert len(sim.open_orders(key)) == 1
            # A fresh timestamp: the default recvWindow is 1000 ms.
            r = await _rest_cancel(sim, key, secret, _body(oid, timestamp=Clock().wall_ms(), responseType="ACK"))
            assert r.json()["success"] is True and sim.open_orders(key) == []


async def test_session_rest_cancel_sends_timestamp_window_and_response_type():
    """The daemon's REST fallback passes the strict check (and cancels)."""
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            ids = await sim.place_orders(key, market=BTC, price="50000", count=3)
            session = OxfunSession(make_config(sim), api_key=Secret(key), api_secret=Secret(secret), clock=Clock())
            from killswitch.model import OrderRef

            res = await session.cancel_orders([OrderRef("ox-test", BTC, i) for i in ids], trip_id=1, on_sent=lambda a: None)
            assert [r.outcome for r in res] == ["ok"] and sorted(res[0].cancelled_ids) == sorted(ids)
            assert sim.open_orders(key) == []


async def test_ws_cancel_without_order_id_is_20010_as_documented():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            async with raw_client(sim) as c:
                assert (await c.login(key, secret))["success"] is True
                await c.send({"op": "cancelorder", "tag": 7, "data": {"marketCode": BTC}})
                reply = await c.recv_json(lambda f: f.get("event") == "cancelorder")
                assert reply["submitted"] is False and reply["code"] == "20010", reply
                assert reply["message"] == "Either clientOrderId or orderId is required"
                assert "orderId" not in reply["data"] and reply["data"] == {"marketCode": BTC}
                # A present but malformed id stays 20019.
                await c.send({"op": "cancelorder", "tag": 8, "data": {"marketCode": BTC, "orderId": "x1"}})
                reply = await c.recv_json(lambda f: f.get("event") == "cancelorder")
                assert reply["code"] == "20019" and reply["data"]["orderId"] == "x1"


async def test_rest_place_checks_the_envelope_and_books_the_order():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            path = "/v3/orders/place"

            async def place(body: dict) -> dict:
                text = orjson.dumps(body).decode()
                headers = wire.rest_headers(api_key=key, secret=secret,
                                            timestamp=wire.rest_timestamp(Clock().wall_ms()), nonce="2", verb="POST",
                                            host=sim.rest_url.split("//")[1], path=path, body=text)
                async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                    return (await http.post(path, content=text.encode(), headers=headers)).json()

            order = {"marketCode": BTC, "side": "BUY", "orderType": "LIMIT", "quantity": "0.1", "price": "50000"}
            assert (await place({"responseType": "FULL", "orders": [order]}))["code"] == "30001"
            stale = await place({"timestamp": Clock().wall_ms() - 5_000, "responseType": "FULL", "orders": [order]})
            assert stale["code"] == "100015"  # default recvWindow 1000 ms
            assert sim.open_orders(key) == []
            r = await place({"timestamp": Clock().wall_ms(), "responseType": "FULL",
                             "orders": [order, {**order, "marketCode": "NOPE-USD"}]})
            ok, bad = r["data"]
            assert ok["submitted"] is True and ok["notice"] == "OrderOpened" and ok["status"] == "OPEN"
            assert bad == {"submitted": False, "code": "20015", "message": "marketCode is invalid",
                           "marketCode": "NOPE-USD"}
            assert [o["orderId"] for o in sim.open_orders(key)] == [ok["orderId"]]
