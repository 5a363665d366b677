"""Issue acceptance: the daemon guards one Hyperliquid account on the simulator, real sockets."""

from __future__ import annotations

from decimal import Decimal

import trio

from tests.integration.hyperliquid_fixtures import KS_AGENT_KEY, MASTER, start_sim

from .daemon_harness import audit_of, daemon_yaml, running_daemon, wait_for


def venue_yaml(sim, *, dms_after: str = "0s") -> str:
    return f"""
  - name: hl-main
    kind: hyperliquid
    private_key: {{env: HL_KEY}}
    network: {sim.network}
    account_address: "{MASTER}"
    rest_url: {sim.rest_url}
    ws_url: {sim.ws_url}
    ping_interval: 1s
    poll_interval: 1s
    request_timeout: 3s
    dms_after: {dms_after}
"""


DRAWDOWN = """
  - name: hl-drawdown
    kind: drawdown
    venues: [hl-main]
    max_drawdown: 5%
"""


async def test_drawdown_trip_leaves_the_account_flat_on_every_plane(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery)
            acct = sim.core.accounts[MASTER]
            acct.positions["BTC"] = (Decimal(1), Decimal(60_000))  # equity 10 000 at mark 60 000
            sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=60)
            sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", reduce_only=True,
                      trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"})
            from killswitch.venues.hyperliquid.sim.core import Twap
            acct.twaps[5] = Twap(5, "SOL", 2, True, Decimal(10), 30, 0)
            env = {"HL_KEY": KS_AGENT_KEY}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), DRAWDOWN), env) as d:
                await wait_for(lambda: d.engine.state.open_count("hl-main") == 62)
                await wait_for(lambda: d.engine.state.book("hl-main").equity is not None)
                assert not d.engine.latch.tripped
                sim.core.assets[0].mark = Decimal(59_300)  # -700 on 10 000: -7%
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: not acct.orders and acct.twaps[5].status == "terminated"
                               and d.engine.all_flat())
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        sent = [r for r in recs if r["event"] == "cancel_sent"]
        assert sent and len({r["nonce"] for r in sent}) == len(sent)  # a fresh nonce every attempt
        results = [r for r in recs if r["event"] == "cancel_result"]
        assert results and all(r["outcome"] == "ok" for r in results), results
        # round 1 on a trusted book: by oid (no cancel-all on this venue), TWAP included
        plan = next(r for r in recs if r["event"] == "cancel_plan")
        assert plan["plan"].startswith("cancel_orders(62 ids)"), plan
        assert {r["verb"] for r in sent} >= {"cancel_orders", "cancel_orders:trigger", "cancel_twap"}
        events = [r["event"] for r in recs]
        assert events.index("trip") < events.index("flat")
