"""The OX.FUN order feed end to end: sim pushes -> real websocket -> session -> engine book.

Regression for the throughput benchmark's preload: pushes carrying several orders in their
``data`` list (§5.3 of the venue notes) must land every order in the engine's book, whether
the sim writes them one push at a time or as pre-encoded frames in large writes.
"""

from __future__ import annotations

import trio

from killswitch.venues.oxfun.sim import OxfunSim

from .daemon_harness import daemon_yaml, running_daemon, wait_for

MARKET = "BTC-USD-SWAP-LIN"
OTHER = "ETH-USD-SWAP-LIN"
VENUE = "ox-main"

RULES = """
  - name: feed-open-orders
    kind: max_open_orders
    max: 100000
  - name: feed-order-rate
    kind: order_rate
    max: 100000
    window: 1s
"""


def venue_yaml(sim: OxfunSim) -> str:
    # No drift poll during the test: the book must come from the pushes alone.
    return f"""
  - name: {VENUE}
    kind: oxfun
    api_key: {{env: OX_KEY}}
    api_secret: {{env: OX_SECRET}}
    ws_url: {sim.ws_url}
    rest_url: {sim.rest_url}
    markets: [{MARKET}]
    poll_interval: 1h
"""


def engine_ids(d) -> set[str]:
    return set(d.engine.state.book(VENUE).orders)


async def test_multi_order_pushes_land_every_order_in_the_book(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sim = OxfunSim()
            await nursery.start(sim.serve)
            key, secret = sim.add_account()
            await sim.place_orders(key, market=MARKET, price="30000", qty="0.01", count=5)  # via reconcile
            env = {"OX_KEY": key, "OX_SECRET": secret}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.open_count(VENUE) == 5)
                acct = sim.accounts[key]
                (conn,) = [c for c in sim._conns.values() if c.account is acct]

                # 1. Pushes of 8 orders each, one frame per push through the sim's normal send path.
                frames = sim.order_feed(key, market=MARKET, n_orders=64, per_frame=8, price_levels=7, close=False)
                assert len(frames) == 8
                for f in frames:
                    await sim._push(conn, f)
                await wait_for(lambda: d.engine.state.open_count(VENUE) == 69)
                assert engine_ids(d) == set(acct.orders)

                # 2. The same shape pre-encoded and written in large chunks (the benchmark's sender),
                #    with a ragged last push (203 = 25 x 8 + 3).
                frames = sim.order_feed(key, market=MARKET, n_orders=203, per_frame=8, close=False)
                await sim.send_encoded(sim.encode_pushes(key, frames, chunk_bytes=4096), len(frames))
                await wait_for(lambda: d.engine.state.open_count(VENUE) == 272)
                assert engine_ids(d) == set(acct.orders)
                prices = {o.price for o in d.engine.state.book(VENUE).orders.values()}
                assert len(prices) == 7  # 7 price levels, every order with its own pushed price

                # 3. Open-and-close pushes (10 per push) leave the book where it was; a
                #    concurrent ticker push from the sim interleaves only between frames.
                #    The last push rests one order on another market: the end marker.
                frames = sim.order_feed(key, market=MARKET, n_orders=500, per_frame=10)
                frames += sim.order_feed(key, market=OTHER, n_orders=1, close=False)
                bad_before = d.engine.counters.bad_frames
                async with trio.open_nursery() as n2:
                    n2.start_soon(sim.send_encoded, sim.encode_pushes(key, frames, chunk_bytes=1024), len(frames))
                    for _ in range(5):
                        n2.start_soon(sim._push_ticker, MARKET)
                await wait_for(lambda: d.engine.state.open_count(VENUE, OTHER) == 1)
                assert d.engine.state.open_count(VENUE, MARKET) == 272
                assert engine_ids(d) == set(acct.orders)
                assert d.engine.counters.bad_frames == bad_before
                assert not d.engine.latch.tripped
                assert d.venues[VENUE].session.connections_made == 1
            nursery.cancel_scope.cancel()
