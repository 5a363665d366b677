"""The Hyperliquid sim's counted (self-clearing) stream faults, over a real socket: the next
N pings go unanswered / the next N push frames are lost, then the sim behaves again."""

from __future__ import annotations

import orjson
import trio

from killswitch.net import ws as wsmod

from .hyperliquid_fixtures import MASTER, start_sim


async def _frames_until_ack(ep: wsmod.WsEndpoint, marker_user: str) -> list[dict]:
    """Frames up to the subscription ack for ``marker_user``: the sim answers in order, so
    whatever the earlier messages caused has arrived by then."""
    await ep.send_text(orjson.dumps({"method": "subscribe", "subscription": {"type": "userFills",
                                                                             "user": marker_user}}))
    out = []
    while True:
        f = orjson.loads(await ep.receive())
        if f["channel"] == "subscriptionResponse" and f["data"]["subscription"].get("user") == marker_user:
            return out
        out.append(f)


async def test_counted_ping_and_push_faults_clear_themselves():
    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            sim = await start_sim(n)
            ep = await wsmod.connect(sim.ws_url, deflate=False, timeout_s=5)
            await ep.send_text(orjson.dumps({"method": "subscribe", "subscription": {"type": "orderUpdates",
                                                                                     "user": MASTER}}))
            assert orjson.loads(await ep.receive())["channel"] == "subscriptionResponse"

            sim.set_faults(ignore_pings_count=1)
            for _ in range(3):
                await ep.send_text(b'{"method":"ping"}')
            frames = await _frames_until_ack(ep, "0x" + "01" * 20)
            assert [f["channel"] for f in frames] == ["pong", "pong"]  # the first of three unanswered
            assert sim.faults.ignore_pings_count == 0

            sim.set_faults(stall_pushes_count=1)
            lost = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1")
            seen = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1")
            frames = await _frames_until_ack(ep, "0x" + "02" * 20)
            oids = [u["order"]["oid"] for f in frames if f["channel"] == "orderUpdates" for u in f["data"]]
            assert oids == seen and lost[0] in sim.core.accounts[MASTER].orders  # placed, push lost
            await ep.abort()
            n.cancel_scope.cancel()
