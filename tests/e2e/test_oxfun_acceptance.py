"""Issue acceptance: the daemon, one OX.FUN account, the simulated exchange, real sockets."""

from __future__ import annotations

import trio

from killswitch.daemon import EXIT_AUTH
from killswitch.venues.oxfun.sim import OxfunSim

from .daemon_harness import audit_of, daemon_yaml, running_daemon, wait_for

MARKETS = ("BTC-USD-SWAP-LIN", "ETH-USD-SWAP-LIN", "SOL-USD-SWAP-LIN")


def venue_yaml(sim: OxfunSim) -> str:
    return f"""
  - name: ox-main
    kind: oxfun
    api_key: {{env: OX_KEY}}
    api_secret: {{env: OX_SECRET}}
    ws_url: {sim.ws_url}
    rest_url: {sim.rest_url}
    markets: [{', '.join(MARKETS)}]
    ping_interval: 2s
    pong_timeout: 2s
    request_timeout: 2s
"""


RULES = """
  - name: ox-drawdown
    kind: drawdown
    venues: [ox-main]
    max_drawdown: 5%
    action: cancel_all
"""


async def start_sim(nursery, **options):
    sim = OxfunSim(**options)
    await nursery.start(sim.serve)
    key, secret = sim.add_account(balances={"OX": "1000"})
    await sim.set_positions(key, {"BTC-USD-SWAP-LIN": {"qty": "1", "entry_price": "100"}})
    await sim.set_mark("BTC-USD-SWAP-LIN", "100")
    return sim, key, secret


async def place_book(sim, key, per_market=(40, 35, 25)):
    for market, n in zip(MARKETS, per_market):
        await sim.place_orders(key, market=market, side="BUY", price="1", qty="1", count=n)


async def test_drawdown_trip_cancels_100_orders_across_3_markets(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim, key, secret = await start_sim(nursery)
            await place_book(sim, key)
            assert len(sim.open_orders(key)) == 100
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.open_count("ox-main") == 100)
                await wait_for(lambda: d.engine.state.book("ox-main").equity is not None)
                assert not d.engine.latch.tripped
                await sim.set_mark("BTC-USD-SWAP-LIN", "40")  # -60 OX on ~1100 equity: -5.45%
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: not sim.open_orders(key) and d.engine.all_flat())
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        events = [r["event"] for r in recs]
        trip = next(r for r in recs if r["event"] == "trip")
        assert trip["rule"] == "ox-drawdown" and trip["rule_kind"] == "drawdown"
        sent = [r for r in recs if r["event"] == "cancel_sent"]
        results = [r for r in recs if r["event"] == "cancel_result"]
        assert sent and len(results) >= len(sent)
        assert sum(r["n_orders"] or 0 for r in sent if r["verb"] == "cancel_orders") >= 100
        assert "flat" in events and events.index("trip") < events.index("flat")
        flat = next(r for r in recs if r["event"] == "flat")
        assert flat["trip_to_first_cancel_ms"] is not None and flat["trip_to_flat_ms"] is not None


async def test_connection_drop_mid_cancel_reconnects_reconciles_finishes(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim, key, secret = await start_sim(nursery)
            await place_book(sim, key)
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.open_count("ox-main") == 100)
                dropped = []

                def on_cancel(t, tag, n):
                    # Drop the socket as the first cancel batch arrives, before any ack.
                    if not dropped:
                        dropped.append(t)
                        nursery.start_soon(sim.drop_connections, key)

                await sim.inject_fault("drop_acks")
                sim.on_cancel_received = on_cancel
                await sim.set_mark("BTC-USD-SWAP-LIN", "40")
                await wait_for(lambda: dropped)
                await sim.inject_fault("clear")
                await wait_for(lambda: not sim.open_orders(key) and d.engine.all_flat())
                # Reconnected, re-logged-in, re-subscribed and reconciled (VenueConnected is
                # only sent after the reconcile snapshot).
                await wait_for(lambda: d.engine.state.is_connected("ox-main")
                               and d.venues["ox-main"].session.connections_made >= 2)
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        events = [r["event"] for r in recs]
        assert "venue_disconnected" in events
        assert events.count("venue_connected") >= 2  # reconnected (and reconciled) after the drop
        assert any(r["event"] == "cancel_result" and r["outcome"] == "unknown" for r in recs)


async def test_orders_placed_after_the_trip_are_swept(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim, key, secret = await start_sim(nursery)
            await place_book(sim, key, (5, 5, 5))
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.open_count("ox-main") == 15)
                await sim.set_mark("BTC-USD-SWAP-LIN", "40")
                await wait_for(lambda: not sim.open_orders(key) and d.engine.all_flat())
                before = d.engine.counters.cancel_requests
                # A runaway strategy keeps placing orders after the trip.
                placed = []
                for _ in range(3):
                    placed += await sim.place_orders(key, market=MARKETS[1], side="SELL", price="99999", qty="1",
                                                     count=4)
                assert len(placed) == 12
                # The sim's own book is the oracle. (Whether an order is cancelled as a stream
                # sweep or from a verify snapshot that saw it first depends on arrival order.)
                await wait_for(lambda: not sim.open_orders(key) and d.engine.all_flat())
                assert d.engine.latch.tripped
                assert d.engine.counters.cancel_requests > before
                assert d.engine.counters.sweeps >= 1
            nursery.cancel_scope.cancel()


async def test_wrong_secret_is_a_clear_startup_error(tmp_path, capsys):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sim, key, secret = await start_sim(nursery)
            from killswitch.config import load_config_text
            from killswitch.daemon import Daemon

            # require_all_venues: without it the daemon keeps guarding the other venues and
            # retries this one (tests/reliability/test_startup_venue_refused.py).
            text = daemon_yaml(tmp_path, venue_yaml(sim), RULES).replace(
                "daemon:\n", "daemon:\n  require_all_venues: true\n", 1)
            d = Daemon(load_config_text(text, "t.yaml"), environ={"OX_KEY": key, "OX_SECRET": "wrong-secret"},
                       handle_signals=False)
            code = await d.run()
            nursery.cancel_scope.cancel()
        assert code == EXIT_AUTH
        assert d.fatal is not None and "ox-main" in str(d.fatal) and "20000" in str(d.fatal)
        out = capsys.readouterr().out
        assert "wrong-secret" not in out and "startup_auth_failed" in out
