"""The Nado simulator refuses what the venue's docs say the venue refuses (issue #13 items 8, 9, 10).

Raw clients over 127.0.0.1; each test shows a request the sim used to accept.
"""

from __future__ import annotations

import secrets

import httpx
import orjson
import trio

from killswitch.net import ws as wsmod
from killswitch.venues.vertex import eip712, wire
from killswitch.venues.vertex.signing import FastSigner

from .vertex_fixtures import sim_and_session

X18 = 10**18


def _auth_frame(sim, sender_hex: str, key: str, rid: int) -> bytes:
    sender = bytes.fromhex(sender_hex[2:])
    exp = sim.clock.wall_ms() + 50_000
    digest = sim.core.domain.digest(eip712.hash_stream_authentication(sender, exp))
    return wire.encode_authenticate(sender, exp, FastSigner(key).sign_digest(digest), rid)


def _cancel_orders_body(sim, acct, digests: list[str], pid: int, **extra) -> dict:
    sender = bytes.fromhex(acct["sender"][2:])
    nonce = ((sim.clock.wall_ms() + 30_000) << 20) | secrets.randbits(20)
    raw = [bytes.fromhex(d[2:]) for d in digests]
    digest = sim.core.domain.digest(eip712.hash_cancellation(sender, [pid] * len(raw), raw, nonce))
    sig = FastSigner(acct["private_key"]).sign_digest(digest)
    body = orjson.loads(wire.encode_cancel_orders(sender, [pid] * len(raw), raw, nonce, sig))
    body["cancel_orders"].update(extra)
    return body


async def test_gateway_rest_without_accept_encoding_is_refused():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            query = orjson.dumps({"type": "status"})
            async with httpx.AsyncClient() as http:
                bare = await http.post(f"{sim.gateway_rest_url}/query", content=query,
                                       headers={"Accept-Encoding": "identity"})
                assert bare.status_code == 400, bare.text
                assert bare.json()["status"] == "failure" and "Accept-Encoding" in bare.json()["error"]
                get = await http.get(f"{sim.gateway_rest_url}/query?type=status", headers={"Accept-Encoding": ""})
                assert get.status_code == 400
                for enc in ("gzip", "br", "deflate", "gzip, deflate"):
                    ok = await http.post(f"{sim.gateway_rest_url}/query", content=query, headers={"Accept-Encoding": enc})
                    assert ok.status_code == 200 and ok.json()["data"] == "active", (enc, ok.text)


async def test_session_rest_queries_send_accept_encoding():
    """The daemon's REST path (gateway socket down) passes the strict check."""
    with trio.fail_after(10):
        async with sim_and_session() as (sim, acct, session, _log):
            (d,) = sim.place_orders(acct["sender"], product_id=2, price="1900", qty="1")
            session._gw = None  # force the REST path (as after the gateway socket died)
            orders = await session.fetch_open_orders()
            assert [o.venue_order_id for o in orders] == [d]


async def test_stream_auth_by_linked_signer_is_refused_unless_allowed():
    with trio.fail_after(10):
        for allow, expect_ok in ((False, False), (True, True)):
            kwargs = {"allow_linked_signer_stream_auth": True} if allow else {}
            async with sim_and_session(start_session=False, sim_kwargs=kwargs) as (sim, acct, _, _log):
                delegate = FastSigner(b"\x09" * 32)
                sim.link_signer(acct["sender"], delegate.address)
                ep = await wsmod.connect(sim.subscribe_ws_url, deflate=True, timeout_s=2)
                await ep.send_text(_auth_frame(sim, acct["sender"], "0x" + "09" * 32, 3))
                reply = orjson.loads(await ep.receive())
                assert (reply.get("error") is None) is expect_ok, reply
                if not expect_ok:
                    assert reply["error_code"] == 2028 and reply["id"] == 3
                # The owner's own key always authenticates.
                await ep.send_text(_auth_frame(sim, acct["sender"], acct["private_key"], 4))
                assert orjson.loads(await ep.receive()) == {"result": None, "id": 4}
                await ep.aclose()


async def test_cancel_orders_required_unfilled_amount_is_enforced():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            d1, d2 = sim.place_orders(acct["sender"], product_id=2, price="1900", qty="2", count=2, price_step="1")
            sim.fill_order(d1, "0.5")  # unfilled 1.5

            async def run(body):
                return await sim.handle_gateway(orjson.dumps(body))

            r = await run(_cancel_orders_body(sim, acct, [d1], 2, required_unfilled_amount=str(2 * X18)))
            assert r["status"] == "failure" and r["error_code"] == 2124, r
            r = await run(_cancel_orders_body(sim, acct, [d1, d2], 2, required_unfilled_amount=str(15 * X18 // 10)))
            assert r["status"] == "failure" and r["error_code"] == 2123, r
            r = await run(_cancel_orders_body(sim, acct, [d1], 2, required_unfilled_amount="lots"))
            assert r["status"] == "failure" and r["error_code"] == 2038, r
            assert len(sim.open_orders(acct["sender"])["orders"]) == 2
            r = await run(_cancel_orders_body(sim, acct, [d1], 2, required_unfilled_amount=str(15 * X18 // 10), id=42))
            assert r["status"] == "success" and r["id"] == 42, r
            assert [o["digest"] for o in r["data"]["cancelled_orders"]] == [d1]


async def test_trigger_order_without_trigger_condition_is_refused():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            sub = sim.core.subaccount(acct["sender"])
            now = sim.clock.wall_ms()
            body = sim.core.sign_order_body(sub, product_id=2, price_x18=1900 * X18, amount=X18,
                                            nonce=((now + 30_000) << 20) | 5)
            async with httpx.AsyncClient() as http:
                r = (await http.post(f"{sim.trigger_url}/execute", content=orjson.dumps(body))).json()
                assert r["status"] == "failure" and "trigger" in r["error"], r
                assert sim.open_orders(acct["sender"])["trigger_orders"] == []
                body["place_order"]["trigger"] = {"price_trigger": {"price_requirement": {"oracle_price_below":
                                                                                           str(1800 * X18)}}}
                r = (await http.post(f"{sim.trigger_url}/execute", content=orjson.dumps(body))).json()
                assert r["status"] == "success", r
                (t,) = sim.core.subaccount(acct["sender"]).trigger_orders.values()
                listed = t.to_trigger_json()
                assert listed["order"]["trigger"] == body["place_order"]["trigger"]
                assert listed["status"] == "waiting_price"


async def test_admin_options_relax_the_strict_checks_for_a_rehearsal():
    with trio.fail_after(10):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            async with httpx.AsyncClient() as http:
                query = orjson.dumps({"type": "status"})
                bare = {"Accept-Encoding": "identity"}
                assert (await http.post(f"{sim.gateway_rest_url}/query", content=query, headers=bare)).status_code == 400
                r = await http.post(f"{sim.admin_url}/options", json={"require_accept_encoding": False,
                                                                      "allow_linked_signer_stream_auth": True})
                assert r.json()["options"]["allow_linked_signer_stream_auth"] is True
                assert (await http.post(f"{sim.gateway_rest_url}/query", content=query, headers=bare)).status_code == 200
                delegate = FastSigner(b"\x0c" * 32)
                r = await http.post(f"{sim.admin_url}/linked_signer", json={"sender": acct["sender"],
                                                                            "signer": delegate.address})
                assert r.json() == {"ok": True}
                assert sim.core.subaccount(acct["sender"]).linked_signer == delegate.address.lower()
                assert (await http.post(f"{sim.admin_url}/options", json={"bogus": 1})).status_code == 400
