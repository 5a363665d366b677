"""Trigger orders the daemon learned only from ``orderUpdates`` are cancelled right the
first time: the real daemon against the Hyperliquid sim over real sockets.

``orderUpdates`` rows carry no trigger fields on the real venue (doc §8; the sim sends
the same), so an order seen only on the stream is of unknown kind until a listing names
it. ``f:true`` is refused for trigger orders, so such an order must go in a batch without
``f`` -- otherwise the first cancel is refused and only a later round fixes it.
"""

from __future__ import annotations

import trio

from killswitch.model import TripCommand
from tests.integration.hyperliquid_fixtures import KS_AGENT_KEY, MASTER, start_sim

from .daemon_harness import audit_of, daemon_yaml, running_daemon, wait_for

STOP = {"isMarket": True, "triggerPx": "1900", "tpsl": "sl"}


def venue_yaml(sim) -> str:
    # A drift poll far away: what is placed after start-up is known from the stream alone.
    return f"""
  - name: hl-main
    kind: hyperliquid
    private_key: {{env: HL_KEY}}
    network: {sim.network}
    account_address: "{MASTER}"
    rest_url: {sim.rest_url}
    ws_url: {sim.ws_url}
    ping_interval: 1s
    poll_interval: 60s
    request_timeout: 3s
    dms_after: 0s
"""


async def test_trigger_orders_learned_from_the_stream_are_cancelled_without_a_refused_fast_cancel(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery)
            acct = sim.core.accounts[MASTER]
            sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=3)
            listed_stop = sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", reduce_only=True,
                                    trigger=STOP)
            rules = "  - {name: max-open, kind: max_open_orders, max: 100000}\n"
            text = daemon_yaml(tmp_path, venue_yaml(sim), rules)
            async with running_daemon(tmp_path, text, {"HL_KEY": KS_AGENT_KEY}) as d:
                await wait_for(lambda: d.engine.state.open_count("hl-main") == 4)
                # the strategy now rests stops (reduce-only and not) and a limit order: pushes only
                sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", count=2, reduce_only=True,
                          trigger=STOP)
                sim.place(MASTER, "BTC", is_buy=True, price="70000", size="0.001", trigger={
                    "isMarket": False, "triggerPx": "65000", "tpsl": "sl"})
                sim.place(MASTER, "BTC", is_buy=True, price="50000", size="0.001")
                await wait_for(lambda: d.engine.state.open_count("hl-main") == 8)
                book = d.engine.state.book("hl-main").orders
                assert book[str(listed_stop[0])].is_trigger  # the listing said so
                await d.send.send(TripCommand(reason="stream triggers", source="test", operator="tester"))
                await wait_for(lambda: not acct.orders and d.engine.all_flat())
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
    assert sim.core.fast_cancels_refused == 0  # the sim's own count of f:true refused on a trigger
    results = [r for r in recs if r["event"] == "cancel_result"]
    assert results and all(r["outcome"] == "ok" and r["code"] == "" for r in results), results
    assert sum(r["n_cancelled"] for r in results) == 8
    # the resting orders the listing named still go with f:true; the rest (the listed stop, the
    # stream-only stops and the stream-only limit order) without f
    sent = {r["verb"]: r["n_orders"] for r in recs if r["event"] == "cancel_sent"}
    assert sent == {"cancel_orders": 3, "cancel_orders:trigger": 5}, sent
    # one round: nothing was left over for a retry to fix
    assert [r["round"] for r in recs if r["event"] == "cancel_plan"] == [1]
