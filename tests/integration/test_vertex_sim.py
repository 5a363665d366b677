"""The simulated gateway's own rules, driven over real loopback sockets and its admin API."""

from __future__ import annotations

import httpx
import orjson
import pytest
import trio

from killswitch.model import VenueConnected, VenueDisconnected
from killswitch.venues.vertex import eip712, wire
from killswitch.net import ws as wsmod
from killswitch.venues.vertex.signing import FastSigner

from .vertex_fixtures import sim_and_session


def _auth_frame(sim, acct, rid=1):
    sender = bytes.fromhex(acct["sender"][2:])
    exp = sim.clock.wall_ms() + 50_000
    digest = sim.core.domain.digest(eip712.hash_stream_authentication(sender, exp))
    return wire.encode_authenticate(sender, exp, FastSigner(acct["private_key"]).sign_digest(digest), rid)


async def _rpc(ep, frame):
    await ep.send_text(frame)
    return orjson.loads(await ep.receive())


async def test_subscribe_without_deflate_is_refused_with_2080():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            with pytest.raises(wsmod.WsHandshakeRejected) as exc:
                await wsmod.connect(sim.subscribe_ws_url, deflate=False, timeout_s=2)
            assert exc.value.status == 400 and orjson.loads(exc.value.body)["error_code"] == 2080
            ep = await wsmod.connect(sim.subscribe_ws_url, deflate=True, timeout_s=2)
            assert ep.extensions == ("permessage-deflate",)
            await ep.aclose()


async def test_order_update_needs_auth_fill_does_not():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            ep = await wsmod.connect(sim.subscribe_ws_url, deflate=True, timeout_s=2)
            sender = bytes.fromhex(acct["sender"][2:])
            r = await _rpc(ep, wire.encode_subscribe("order_update", sender, 1, 5))
            assert r == {"result": None, "error": "Auth is needed.", "id": 5}
            assert await _rpc(ep, wire.encode_subscribe("fill", sender, 1, 6)) == {"result": None, "id": 6}
            assert await _rpc(ep, _auth_frame(sim, acct, 7)) == {"result": None, "id": 7}
            assert await _rpc(ep, wire.encode_subscribe("order_update", sender, 1, 8)) == {"result": None, "id": 8}
            (d,) = sim.place_orders(acct["sender"], product_id=1, price="900", qty="1")
            ev = orjson.loads(await ep.receive())
            assert ev["type"] == "order_update" and ev["digest"] == d and ev["reason"] == "placed"
            await ep.aclose()


async def test_sixth_authenticated_connection_is_dropped():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            eps = []
            for i in range(5):
                ep = await wsmod.connect(sim.subscribe_ws_url, deflate=True, timeout_s=2)
                assert (await _rpc(ep, _auth_frame(sim, acct, i + 1)))["id"] == i + 1
                eps.append(ep)
            sixth = await wsmod.connect(sim.subscribe_ws_url, deflate=True, timeout_s=2)
            await sixth.send_text(_auth_frame(sim, acct, 9))
            with pytest.raises(wsmod.WsClosed):
                await sixth.receive()
            assert sim.state()["authenticated_subscriptions"] == 5
            for ep in eps:
                await ep.aclose()


async def test_stale_stream_auth_and_wrong_signer_refused():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            ep = await wsmod.connect(sim.subscribe_ws_url, deflate=True, timeout_s=2)
            sender = bytes.fromhex(acct["sender"][2:])
            exp = sim.clock.wall_ms() - 1
            digest = sim.core.domain.digest(eip712.hash_stream_authentication(sender, exp))
            sig = FastSigner(acct["private_key"]).sign_digest(digest)
            r = await _rpc(ep, wire.encode_authenticate(sender, exp, sig, 1))
            assert r["error"] and r["id"] == 1
            exp = sim.clock.wall_ms() + 10_000
            digest = sim.core.domain.digest(eip712.hash_stream_authentication(sender, exp))
            r = await _rpc(ep, wire.encode_authenticate(sender, exp, FastSigner(b"\x07" * 32).sign_digest(digest), 2))
            assert r["error_code"] == 2028
            await ep.aclose()


async def test_idle_connections_are_dropped():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False, sim_kwargs={"idle_timeout_s": 0.3}) as (sim, acct, _, _l):
            ep = await wsmod.connect(sim.gateway_ws_url, deflate=False, timeout_s=2)
            with pytest.raises(wsmod.WsClosed):
                await ep.receive()  # no ping, no traffic: the sim drops us


async def test_session_pings_keep_it_alive_and_detects_silent_peer():
    with trio.fail_after(15):
        async with sim_and_session(sim_kwargs={"idle_timeout_s": 0.6}, ping_interval_s=0.15) as (sim, acct, s, log):
            t0 = trio.current_time()
            await trio.sleep(1.0)  # longer than the idle timeout: pings keep both sockets up
            assert not log.of(VenueDisconnected), trio.current_time() - t0
            sim.set_faults(ignore_pings=True)  # pongs stop: the session must notice and reconnect
            await log.wait_for(lambda evs: any(isinstance(e, VenueDisconnected) for e in evs))
            sim.set_faults(ignore_pings=False)
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, VenueConnected)]) >= 2)


async def test_admin_api_round_trip():
    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, _acct, _, _log):
            async with httpx.AsyncClient(base_url=sim.admin_url) as c:
                acct = (await c.post("/subaccounts", json={"name": "bot"})).json()
                assert acct["sender"].startswith(acct["address"]) and len(acct["sender"]) == 66
                r = (await c.post("/orders", json={"sender": acct["sender"], "product_id": 2, "side": "sell",
                                                   "price": "2100", "qty": "0.25", "count": 5})).json()
                assert len(r["digests"]) == 5
                r = (await c.post("/trigger_orders", json={"sender": acct["sender"], "product_id": 2,
                                                           "price": "1800", "qty": "1", "count": 2})).json()
                assert len(r["digests"]) == 2
                got = (await c.get("/orders", params={"sender": acct["sender"]})).json()
                assert len(got["orders"]) == 5 and len(got["trigger_orders"]) == 2
                assert (await c.post("/oracle", json={"2": "2500"})).json() == {"ok": True}
                await c.post("/balances", json={"sender": acct["sender"], "spot": {"0": "100"}, "perp": {"2": ["1", "-2000"]}})
                st = (await c.get("/state")).json()
                # 100 + (1 * 2500 - 2000) = 600
                assert st["subaccounts"][acct["sender"]]["health_x18"] == str(600 * 10**18)
                await c.post("/burn_weight", json={"sender": acct["sender"], "weight": 60})
                assert (await c.get("/state")).json()["wallet_weight_available"][acct["address"]] == 40
                f = (await c.post("/faults", json={"reject_code": 2028, "reject_count": 1})).json()
                assert f["faults"]["reject_count"] == 1
                bad = await c.post("/faults", json={"nope": 1})
                assert bad.status_code == 400
            # REST gateway: GET query
            async with httpx.AsyncClient() as c:
                r = (await c.get(f"{sim.gateway_rest_url}/query", params={"type": "contracts"})).json()
                assert r["data"]["chain_id"] == "57073"


async def test_sim_rejects_bad_signatures_and_windows():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            sender = bytes.fromhex(acct["sender"][2:])
            signer = FastSigner(acct["private_key"])
            now = sim.clock.wall_ms()

            def cancel(nonce, sig=None):
                digest = sim.core.domain.digest(eip712.hash_cancellation_products(sender, [], nonce))
                return orjson.loads(wire.encode_cancel_product_orders(sender, [], nonce, sig or signer.sign_digest(digest)))

            async def run(body):
                return await sim.handle_gateway(orjson.dumps(body))

            assert (await run(cancel((now - 1) << 20)))["error_code"] == 2011
            assert (await run(cancel((now + 200_000) << 20)))["error_code"] == 2012
            assert (await run(cancel((now + 5_000) << 20, b"\x01" * 64)))["error_code"] == 2027
            assert (await run(cancel((now + 5_000) << 20, b"\x01" * 64 + b"\x09")))["error_code"] == 2034
            ok = await run(cancel(((now + 5_000) << 20) | 1))
            assert ok["status"] == "success" and ok["request_type"] == "execute_cancel_product_orders"
            body = cancel(((now + 5_000) << 20) | 2)
            body["cancel_product_orders"]["tx"]["productIds"] = [99]
            assert (await run(body))["error_code"] in (2028, 2016)  # signature no longer matches the tx
            # unknown digest -> 2020
            d = b"\x05" * 32
            n = ((now + 5_000) << 20) | 3
            digest = sim.core.domain.digest(eip712.hash_cancellation(sender, [1], [d], n))
            r = await run(orjson.loads(wire.encode_cancel_orders(sender, [1], [d], n, signer.sign_digest(digest))))
            assert r["error_code"] == 2020 and ("0x" + d.hex()) in r["error"]
