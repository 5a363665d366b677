"""Fault matrix, Hyperliquid: the daemon on the simulator with faults injected at the venue.
Each case ends flat from venue data (or in a loud alarm), never silent."""

from __future__ import annotations

import trio

from killswitch.venues.hyperliquid import signing
from tests.e2e.daemon_harness import audit_of, daemon_yaml, running_daemon, wait_for
from tests.e2e.test_hyperliquid_acceptance import venue_yaml
from tests.integration.hyperliquid_fixtures import KS_AGENT, KS_AGENT_KEY, MASTER, start_sim

RULES = """
  - name: max-open
    kind: max_open_orders
    venues: [hl-main]
    max: 3
"""


async def _trip_with(tmp_path, fault, *, settle=None):
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery)
            acct = sim.core.accounts[MASTER]
            env = {"HL_KEY": KS_AGENT_KEY}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.book("hl-main").connected)
                fault(sim)
                sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=4)
                await wait_for(lambda: d.engine.latch.tripped)
                if settle is not None:
                    await settle(sim, d)
                else:
                    await wait_for(lambda: not acct.orders and d.engine.all_flat())
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
    return recs


async def test_reply_dropped_after_commit_is_unknown_then_verified_flat(tmp_path):
    recs = await _trip_with(tmp_path, lambda sim: sim.set_faults(drop_response_count=1))
    outcomes = [r["outcome"] for r in recs if r["event"] == "cancel_result"]
    assert outcomes[0] == "unknown" and "flat" in [r["event"] for r in recs]


async def test_http_500_then_retry_with_a_fresh_nonce(tmp_path):
    recs = await _trip_with(tmp_path, lambda sim: sim.set_faults(http_500_count=1))
    sent = [r for r in recs if r["event"] == "cancel_sent"]
    assert [r["outcome"] for r in recs if r["event"] == "cancel_result"][0] == "unknown"
    assert len(sent) >= 2 and len({r["nonce"] for r in sent}) == len(sent)


async def test_slow_venue_past_the_request_timeout_is_unknown_then_flat(tmp_path):
    recs = await _trip_with(tmp_path, lambda sim: sim.set_faults(delay_s=3.5, delay_count=1))
    assert [r["outcome"] for r in recs if r["event"] == "cancel_result"][0] == "unknown"


async def test_pongs_stop_and_the_session_reconnects(tmp_path):
    async def settle_disconnect(sim, d):
        acct = sim.core.accounts[MASTER]
        await wait_for(lambda: not acct.orders and d.engine.all_flat())
        sim.set_faults(ignore_pings=True)
        while not any(r["event"] == "venue_disconnected" for r in await audit_of(d)):
            await trio.sleep(0.1)
        sim.set_faults(ignore_pings=False)
        await wait_for(lambda: d.engine.state.book("hl-main").connected)

    recs = await _trip_with(tmp_path, lambda sim: None, settle=settle_disconnect)
    disc = [r for r in recs if r["event"] == "venue_disconnected"]
    assert disc and "no pong" in disc[0]["reason"]


async def test_killswitch_agent_deregistered_cancels_alarm_auth(tmp_path):
    def revoke(sim):
        # someone approved another agent under the kill switch's name: its key is dead
        sim.core.accounts[MASTER].removal_pending_until_ms = 0
        sim.core.add_agent(MASTER, signing.FastSigner("0x" + "77" * 32).address, "killswitch")

    async def settle(sim, d):
        await wait_for(lambda: "auth:hl-main" in d.engine.alarms)
        assert KS_AGENT in d.engine.alarms["auth:hl-main"]

    recs = await _trip_with(tmp_path, revoke, settle=settle)
    assert any(r["event"] == "cancel_result" and r["outcome"] == "auth" for r in recs)


async def test_a_tight_repoll_is_paced_inside_the_venues_ip_weight_never_429(tmp_path):
    """Tripped, the engine re-verifies every 300 ms: ~8000 weight a minute against the venue's
    1200. The session paces itself (and alarms unverified when it cannot keep up) instead of
    drawing 429s from the venue."""
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery)
            acct = sim.core.accounts[MASTER]
            env = {"HL_KEY": KS_AGENT_KEY}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.book("hl-main").connected)
                sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=4)
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: not acct.orders and d.engine.all_flat())
                t0 = trio.current_time()
                while trio.current_time() - t0 < 8:  # long enough to spend a minute's weight at 300 ms
                    await trio.sleep(0.5)
                assert sim.refused_429 == 0
                # and a strategy order placed now is still swept
                sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1")
                await wait_for(lambda: not acct.orders)
            nursery.cancel_scope.cancel()
