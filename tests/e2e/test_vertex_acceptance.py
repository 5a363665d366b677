"""Issue acceptance: the daemon, one Nado subaccount, the simulated gateway, real sockets."""

from __future__ import annotations

import trio

from killswitch.venues.vertex.sim import VertexSim

from tests.integration.vertex_fixtures import ShiftClock

from .daemon_harness import audit_of, daemon_yaml, running_daemon, wait_for

PRODUCTS = (1, 2, 3, 4, 5)


def venue_yaml(sim: VertexSim, *, recv_window: str = "30s", products=PRODUCTS) -> str:
    return f"""
  - name: nado-main
    kind: nado
    private_key: {{env: NADO_KEY}}
    gateway_ws_url: {sim.gateway_ws_url}
    subscribe_ws_url: {sim.subscribe_ws_url}
    gateway_rest_url: {sim.gateway_rest_url}
    trigger_url: {sim.trigger_url}
    chain_id: {sim.chain_id}
    endpoint_address: "{sim.endpoint_address}"
    products: [{', '.join(map(str, products))}]
    recv_window: {recv_window}
    equity_poll_interval: 200ms
    ping_interval: 1s
    request_timeout: 3s
"""


DRAWDOWN = """
  - name: nado-drawdown
    kind: drawdown
    venues: [nado-main]
    max_drawdown: 5%
"""

MAX_OPEN = """
  - name: nado-max-open
    kind: max_open_orders
    venues: [nado-main]
    max: 205
"""


async def start_sim(nursery, clock=None):
    sim = VertexSim(flavour="nado", clock=clock) if clock else VertexSim(flavour="nado")
    await nursery.start(sim.serve)
    acct = sim.create_subaccount()
    sim.set_oracle({2: "1000"})
    # Equity 10 000 USD: 10 000 quote + a 1-unit perp marked at its entry.
    sim.set_balances(acct["sender"], spot={0: "10000"}, perp={2: ("1", "-1000")})
    return sim, acct


def place_200_plus_3_triggers(sim, sender):
    for pid in PRODUCTS:
        sim.place_orders(sender, product_id=pid, price="10", qty="1", count=40, price_step="0.01")
    for pid in (1, 2, 3):
        sim.place_orders(sender, product_id=pid, price="5", qty="1", count=1, trigger=True)


def counts(sim, sender):
    oo = sim.open_orders(sender)
    return len(oo["orders"]), len(oo["trigger_orders"])


async def test_drawdown_trip_leaves_zero_resting_and_zero_trigger_orders(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim, acct = await start_sim(nursery)
            place_200_plus_3_triggers(sim, acct["sender"])
            assert counts(sim, acct["sender"]) == (200, 3)
            env = {"NADO_KEY": acct["private_key"]}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), DRAWDOWN), env) as d:
                await wait_for(lambda: d.engine.state.open_count("nado-main") == 203)
                await wait_for(lambda: d.engine.state.book("nado-main").equity is not None)
                assert not d.engine.latch.tripped
                sim.set_oracle({2: "400"})  # -600 on 10 000: -6%
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: counts(sim, acct["sender"]) == (0, 0) and d.engine.all_flat())
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        sent = [r for r in recs if r["event"] == "cancel_sent"]
        assert sent, "no cancel on the wire"
        # Every signed request is audited with its nonce and recv_time, and each is fresh.
        assert all("nonce" in r and "recv_time_ms" in r for r in sent)
        assert len({r["nonce"] for r in sent}) == len(sent)
        # 5 products x 5 = 25 weight beats 203 digests or 50 for all products.
        plan = next(r for r in recs if r["event"] == "cancel_plan")
        assert plan["plan"].startswith("cancel_products(1,2,3,4,5)")
        results = [r for r in recs if r["event"] == "cancel_result"]
        assert results and all(r["outcome"] == "ok" for r in results)
        assert sum(r["n_cancelled"] for r in results) >= 200
        # Both planes: the trigger service got its own signed cancel.
        assert any("trigger" in r["verb"] for r in sent), [r["verb"] for r in sent]
        events = [r["event"] for r in recs]
        assert events.index("trip") < events.index("flat")


async def test_max_open_orders_trip(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim, acct = await start_sim(nursery)
            place_200_plus_3_triggers(sim, acct["sender"])
            env = {"NADO_KEY": acct["private_key"]}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), MAX_OPEN), env) as d:
                await wait_for(lambda: d.engine.state.open_count("nado-main") == 203)
                sim.place_orders(acct["sender"], product_id=4, price="9", qty="1", count=3)  # 206 > 205
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: counts(sim, acct["sender"]) == (0, 0) and d.engine.all_flat())
                assert d.engine.latch.trips[0].rule == "nado-max-open"
            nursery.cancel_scope.cancel()


async def test_cancel_delayed_past_recv_time_is_resigned_and_succeeds(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim, acct = await start_sim(nursery)
            sim.place_orders(acct["sender"], product_id=1, price="10", qty="1", count=10)
            env = {"NADO_KEY": acct["private_key"]}
            # recv_time = now + 1 s; the gateway holds the first execute for 1.5 s.
            text = daemon_yaml(tmp_path, venue_yaml(sim, recv_window="1s"), DRAWDOWN)
            async with running_daemon(tmp_path, text, env) as d:
                await wait_for(lambda: d.engine.state.open_count("nado-main") == 10)
                sim.set_faults(delay_s=1.5, delay_count=1)
                sim.set_oracle({2: "400"})
                await wait_for(lambda: counts(sim, acct["sender"]) == (0, 0) and d.engine.all_flat())
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        # Both planes are cancelled concurrently; whichever execute the gateway held got 2011.
        late = next(r for r in recs if r["event"] == "cancel_result" and r["code"] == "2011")
        sent = [r for r in recs if r["event"] == "cancel_sent" and r["verb"] == late["verb"]]
        assert len(sent) >= 2
        first, retry = sent[0], sent[1]
        assert retry["attempt"] == first["attempt"] + 1
        assert first["nonce"] != retry["nonce"] and retry["recv_time_ms"] > first["recv_time_ms"]
        assert any(r["event"] == "cancel_result" and r["verb"] == late["verb"] and r["outcome"] == "ok"
                   for r in recs)


async def test_cancels_get_through_while_the_strategy_burns_the_wallet_budget(tmp_path):
    """The strategy shares the wallet's 600/min, 100/10 s weight budget.

    1. It has burnt 75 of the 100 weight in the 10 s window: the planner's choice, 5
       products x 5 = 25 weight, still fits (an all-products cancel, 50, would not; 200
       digests, 200, never could). No 1000 error.
    2. Then it burns everything: the cancel is answered 1000 (rate limited), the engine backs
       off and retries with a fresh nonce as the window frees, and ends flat.
    """
    with trio.fail_after(60):
        clock = ShiftClock()
        async with trio.open_nursery() as nursery:
            sim, acct = await start_sim(nursery, clock=clock)
            place_200_plus_3_triggers(sim, acct["sender"])
            env = {"NADO_KEY": acct["private_key"]}
            text = daemon_yaml(tmp_path, venue_yaml(sim), MAX_OPEN)
            from killswitch.config import load_config_text
            from killswitch.daemon import Daemon

            cfg = load_config_text(text, str(tmp_path / "k.yaml"))
            d = Daemon(cfg, environ=env, handle_signals=False, clock=clock)
            await nursery.start(d.run)
            await wait_for(lambda: d.engine.state.open_count("nado-main") == 203)
            sim.burn_weight(acct["address"], 75)
            sim.place_orders(acct["sender"], product_id=5, price="9", qty="1", count=3)  # trips
            await wait_for(lambda: counts(sim, acct["sender"])[0] == 0 and d.engine.all_flat())
            recs = await audit_of(d)
            results = [r for r in recs if r["event"] == "cancel_result"]
            assert all(r["code"] != "1000" for r in results)
            plan = next(r for r in recs if r["event"] == "cancel_plan")
            assert "cancel_products(1,2,3,4,5)" in plan["plan"] and "cost 25" in plan["plan"]

            # Phase 2: the runaway strategy burns the whole window, then places more orders.
            clock.shift_s += 61  # a fresh window for a clean start
            sim.burn_weight(acct["address"], 100)
            sim.place_orders(acct["sender"], product_id=3, price="9", qty="1", count=5)
            while not any(r["event"] == "cancel_result" and r["code"] == "1000" for r in await audit_of(d)):
                await trio.sleep(0.01)
            clock.shift_s += 11  # the 10 s window frees
            await wait_for(lambda: counts(sim, acct["sender"])[0] == 0 and d.engine.all_flat())
            recs = await audit_of(d)
            d.request_stop()
            nursery.cancel_scope.cancel()
        results = [r for r in recs if r["event"] == "cancel_result"]
        limited = [i for i, r in enumerate(results) if r["code"] == "1000"]
        assert limited and any(r["outcome"] == "ok" for r in results[limited[-1] + 1:])

