"""Nado/Vertex session against the simulated gateway over real 127.0.0.1 websockets."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from killswitch.model import (
    CashFlowObserved,
    EquityObserved,
    OpenOrdersSnapshot,
    OrderClosed,
    OrderFilled,
    OrderOpened,
    OrderRef,
    PositionObserved,
    VenueConnected,
    VenueDisconnected,
)
from killswitch.secrets import Secret
from killswitch.venues.base import AuthError, VenueRejected
from killswitch.venues.vertex.session import VertexSession
from killswitch.venues.vertex.sim import VertexSim

from .vertex_fixtures import SentLog, ShiftClock, make_config, sim_and_session


async def test_connect_reconcile_and_stream_orders():
    with trio.fail_after(15):
        async with sim_and_session() as (sim, acct, session, log):
            snaps = log.of(OpenOrdersSnapshot)
            assert snaps and snaps[0].purpose == "reconcile" and snaps[0].orders == ()
            assert log.of(VenueConnected)
            # the snapshot comes before VenueConnected
            assert log.events.index(snaps[0]) < log.events.index(log.of(VenueConnected)[0])
            digests = sim.place_orders(acct["sender"], product_id=2, price="2000", qty="0.5", side="sell", count=3)
            opened = await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, OrderOpened)]) >= 3 and
                                        [e for e in evs if isinstance(e, OrderOpened)])
            assert {e.order.venue_order_id for e in opened} == set(digests)
            assert all(e.order.product == "2" for e in opened)
            assert opened[0].ts_recv_s > 0
            state = sim.state()
            assert state["authenticated_subscriptions"] == 1


async def test_reconcile_sees_existing_orders_and_triggers():
    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            sim.place_orders(acct["sender"], product_id=1, price="1000", qty="1", count=4)
            sim.place_orders(acct["sender"], product_id=4, price="4000", qty="1", count=2, trigger=True)
            cfg = make_config(sim)
            session = VertexSession(cfg, private_key=Secret(acct["private_key"]), clock=sim.clock)
            orders = await session.fetch_open_orders()  # REST + trigger service, no socket yet
            assert len(orders) == 6
            assert sum(o.is_trigger for o in orders) == 2
            assert {o.product for o in orders if o.is_trigger} == {"4"}


async def test_equity_fills_positions_and_cash_flows():
    with trio.fail_after(15):
        async with sim_and_session() as (sim, acct, session, log):
            sim.set_balances(acct["sender"], spot={0: "1000"}, reason="deposit_collateral")
            flows = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, CashFlowObserved)])
            assert flows[0].amount == Decimal("1000")
            await log.wait_for(lambda evs: any(isinstance(e, EquityObserved) and e.equity == Decimal("1000")
                                               for e in evs))
            (d,) = sim.place_orders(acct["sender"], product_id=2, price="2000", qty="1.5", count=1)
            sim.set_oracle({2: "2100"})
            sim.fill_order(d, "1")
            fill = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, OrderFilled)])
            assert fill[0].qty == Decimal(1) and fill[0].price == Decimal(2000) and fill[0].remaining == Decimal("0.5")
            pos = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, PositionObserved)])
            assert pos[-1].product == "2" and pos[-1].qty == Decimal(1)
            # equity = 1000 + (1 * 2100 - 2000) = 1100, from healths[2] after the fill
            await log.wait_for(lambda evs: any(isinstance(e, EquityObserved) and e.equity == Decimal("1100")
                                               for e in evs))


async def test_cancel_all_orders_both_planes():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, acct, session, log):
            for pid in range(1, 6):
                sim.place_orders(acct["sender"], product_id=pid, price=str(1000 * pid), qty="0.1", count=40,
                                 price_step="1")
            sim.place_orders(acct["sender"], product_id=2, price="1500", qty="1", count=3, trigger=True)
            assert len(sim.open_orders(acct["sender"])["orders"]) == 200
            sent = SentLog()
            results = await session.cancel_all_orders(include_triggers=True, trip_id=7, on_sent=sent)
            assert sorted(r.verb for r in results) == ["cancel_all_orders", "cancel_all_orders:trigger"]
            assert all(r.outcome == "ok" for r in results), results
            engine = next(r for r in results if r.verb == "cancel_all_orders")
            assert len(engine.cancelled_ids) == 200
            left = sim.open_orders(acct["sender"])
            assert left == {"orders": [], "trigger_orders": []}
            assert len(sent.attempts) == 2 and all(a.ts_sent_s > 0 for a in sent.attempts)
            nonces = {a.detail["nonce"] for a in sent.attempts}
            assert len(nonces) == 2
            # one (0, cancelled) order_update per order reaches the session
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, OrderClosed)]) >= 200)
            assert session.budget_available(session._clock.monotonic_s()) == 100 - 50


async def test_cancel_products_and_by_digest():
    with trio.fail_after(15):
        async with sim_and_session() as (sim, acct, session, log):
            d1 = sim.place_orders(acct["sender"], product_id=1, price="900", qty="1", count=3)
            sim.place_orders(acct["sender"], product_id=3, price="2900", qty="1", count=2)
            trig = sim.place_orders(acct["sender"], product_id=3, price="2500", qty="1", count=1, trigger=True)
            res = await session.cancel_products(["3"], include_triggers=False, trip_id=1, on_sent=SentLog())
            assert [r.outcome for r in res] == ["ok"] and len(res[0].cancelled_ids) == 2
            refs = [OrderRef(session.name, "1", d) for d in d1[:2]] + [OrderRef(session.name, "3", trig[0], True)]
            res = await session.cancel_orders(refs, trip_id=1, on_sent=SentLog())
            assert sorted(r.verb for r in res) == ["cancel_orders", "cancel_orders:trigger"]
            assert all(r.outcome == "ok" for r in res)
            left = sim.open_orders(acct["sender"])
            assert [o["digest"] for o in left["orders"]] == [d1[2]] and left["trigger_orders"] == []
            # already gone: 2020 -> ok with gone_ids; a mixed batch re-cancels the live ones
            res = await session.cancel_orders([OrderRef(session.name, "1", d1[0]), OrderRef(session.name, "1", d1[2])],
                                              trip_id=2, on_sent=SentLog())
            assert res[0].outcome == "ok" and res[0].gone_ids == (d1[0],) and res[0].code == "2020"
            assert res[1].outcome == "ok" and res[1].cancelled_ids == (d1[2],)
            assert sim.open_orders(acct["sender"])["orders"] == []


async def test_late_recv_time_is_retried_with_fresh_nonce():
    with trio.fail_after(15):
        async with sim_and_session(recv_window_s=0.2) as (sim, acct, session, log):
            sim.place_orders(acct["sender"], product_id=1, price="900", qty="1", count=2)
            sim.set_faults(delay_s=0.4, delay_count=1)  # the first cancel arrives after its recv_time
            sent = SentLog()
            res = await session.cancel_all_orders(include_triggers=False, trip_id=3, on_sent=sent)
            assert [(r.outcome, r.code) for r in res] == [("rejected", "2011"), ("ok", "")]
            assert len(sent.attempts) == 2
            n1, n2 = (a.detail["nonce"] for a in sent.attempts)
            assert n1 != n2 and sent.attempts[1].detail["recv_time_ms"] > sent.attempts[0].detail["recv_time_ms"]
            assert len(res[1].cancelled_ids) == 2


async def test_bad_signer_is_auth_outcome():
    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            # key of another wallet, claiming acct's address as the wallet: signer mismatch
            other = sim.create_subaccount(name="other")
            stranger = VertexSim().core.create_subaccount(name="x")
            cfg = make_config(sim, wallet_address=acct["address"])
            session = VertexSession(cfg, private_key=Secret(stranger.private_key_hex), clock=sim.clock)
            res = await session.cancel_all_orders(include_triggers=False, trip_id=1, on_sent=SentLog())
            assert [(r.outcome, r.code) for r in res] == [("auth", "2028")]
            assert other["sender"] != acct["sender"]


async def test_first_auth_refused_raises_from_run():
    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            stranger = VertexSim().core.create_subaccount(name="x")
            cfg = make_config(sim, wallet_address=acct["address"])
            session = VertexSession(cfg, private_key=Secret(stranger.private_key_hex), clock=sim.clock)
            send, _recv = trio.open_memory_channel(100)
            with pytest.raises(AuthError):
                await session.run(send)


async def test_contract_mismatch_is_a_clear_error():
    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            cfg = make_config(sim, chain_id=763373)
            session = VertexSession(cfg, private_key=Secret(acct["private_key"]), clock=sim.clock)
            send, _recv = trio.open_memory_channel(100)
            with pytest.raises(VenueRejected, match="chain 57073"):
                await session.run(send)


async def test_rate_limited_then_succeeds_when_window_frees():
    clock = ShiftClock()
    with trio.fail_after(15):
        async with sim_and_session(clock=clock) as (sim, acct, session, log):
            sim.place_orders(acct["sender"], product_id=1, price="900", qty="1", count=2)
            sim.burn_weight(acct["sender"], 90)  # the strategy burnt the 10 s window
            res = await session.cancel_all_orders(include_triggers=False, trip_id=4, on_sent=SentLog())
            assert [(r.outcome, r.code) for r in res] == [("rate_limited", "1000")]
            assert "retry after" in res[0].message
            assert session.budget_available(clock.monotonic_s()) == 0
            clock.shift_s += 61  # both windows roll over (sim and session share the clock)
            assert session.budget_available(clock.monotonic_s()) > 50
            res = await session.cancel_all_orders(include_triggers=False, trip_id=4, on_sent=SentLog())
            assert [r.outcome for r in res] == ["ok"] and len(res[0].cancelled_ids) == 2


async def test_socket_drop_unknown_reconnect_and_reconcile():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, acct, session, log):
            sim.place_orders(acct["sender"], product_id=1, price="900", qty="1", count=2)
            sim.set_faults(drop_response_count=1)
            sent = SentLog()
            async with trio.open_nursery() as n:
                results = []

                async def cancel():
                    results.extend(await session.cancel_all_orders(include_triggers=False, trip_id=5, on_sent=sent))

                n.start_soon(cancel)
                await trio.testing.wait_all_tasks_blocked()
                while not sent.attempts:
                    await trio.sleep(0.01)
                await sim.drop_connections()
            assert [r.outcome for r in results] == ["unknown"]
            await log.wait_for(lambda evs: any(isinstance(e, VenueDisconnected) for e in evs))
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, VenueConnected)]) >= 2)
            snaps = log.of(OpenOrdersSnapshot)
            assert len(snaps) >= 2 and snaps[-1].purpose == "reconcile"
            # the dropped-response cancel did act: the reconcile shows the venue's own truth
            assert snaps[-1].orders == ()


async def test_rest_fallback_when_gateway_socket_down():
    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            sim.place_orders(acct["sender"], product_id=5, price="5000", qty="1", count=3)
            session = VertexSession(make_config(sim), private_key=Secret(acct["private_key"]), clock=sim.clock)
            sent = SentLog()
            res = await session.cancel_products(["5"], include_triggers=True, trip_id=1, on_sent=sent)
            assert all(r.outcome == "ok" for r in res) and len(res) == 2
            assert {a.detail["transport"] for a in sent.attempts} == {"rest", "trigger"}
            assert sim.open_orders(acct["sender"])["orders"] == []


async def test_maintenance_is_unknown_with_code():
    with trio.fail_after(15):
        async with sim_and_session() as (sim, acct, session, log):
            sim.set_faults(maintenance_count=1, maintenance_code=2068)
            res = await session.cancel_all_orders(include_triggers=False, trip_id=1, on_sent=SentLog())
            assert [(r.outcome, r.code) for r in res] == [("unknown", "2068")]


async def test_vertex_flavour_smoke():
    with trio.fail_after(15):
        async with sim_and_session(flavour="vertex", name="vertex-test") as (sim, acct, session, log):
            assert sim.chain_id == 42161 and session._domain.name == "Vertex"
            sim.place_orders(acct["sender"], product_id=2, price="2000", qty="1", count=2)
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, OrderOpened)]) >= 2)
            res = await session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=SentLog())
            assert all(r.outcome == "ok" for r in res)
            assert sim.open_orders(acct["sender"])["orders"] == []


async def test_first_cancel_request_leaves_without_a_task_hop():
    """cancel_orders / cancel_products hand the first request to the gateway connection
    without yielding to the scheduler (no nursery or lock round in between), so a trip's
    first cancel is not queued behind whatever else is runnable in the daemon. A spinner
    task counts scheduler rounds: if the call yielded before the request, it would have run."""
    from killswitch.model import OrderRef

    with trio.fail_after(15):
        async with sim_and_session() as (sim, acct, session, log):
            digests = sim.place_orders(acct["sender"], product_id=2, price="900", qty="1", count=2)
            real_gw = session._gw
            rounds = [0]
            at_request: list[int] = []

            class SpyGw:
                alive = True

                async def request(self, body, **kw):
                    at_request.append(rounds[0])
                    return await real_gw.request(body, **kw)

            async def spinner():
                while True:
                    rounds[0] += 1
                    await trio.sleep(0)

            session._gw = SpyGw()
            try:
                async with trio.open_nursery() as n:
                    n.start_soon(spinner)
                    await trio.sleep(0.01)
                    start = rounds[0]
                    res = await session.cancel_orders(
                        [OrderRef(session.name, "2", d, False) for d in digests], trip_id=1, on_sent=SentLog())
                    assert at_request[0] == start and res[0].outcome == "ok"
                    sim.place_orders(acct["sender"], product_id=2, price="900", qty="1")
                    start = rounds[0]
                    res = await session.cancel_products(["2"], include_triggers=True, trip_id=2, on_sent=SentLog())
                    assert at_request[1] == start  # engine plane first; the trigger plane after
                    assert {r.verb for r in res} == {"cancel_products", "cancel_products:trigger"}
                    assert all(r.outcome == "ok" for r in res), res
                    n.cancel_scope.cancel()
            finally:
                session._gw = real_gw


async def test_stream_forwarding_keeps_backpressure_and_order_without_yielding_per_event():
    """The reader hands events over with send_nowait while the channel has room, and waits
    (never drops) when it is full; order is kept either way."""
    import orjson
    import trio.testing

    from killswitch.clock import Clock
    from killswitch.model import OrderOpened

    sim = VertexSim()  # not serving: only its URLs feed the config
    session = VertexSession(make_config(sim), private_key=Secret("0x" + "11" * 32), clock=Clock())
    digests = ["0x%064x" % i for i in range(6)]
    frames = [orjson.dumps({"type": "order_update", "timestamp": "1000000", "product_id": 2, "digest": d,
                            "amount": "1000000000000000000", "reason": "placed"}) for d in digests]
    with trio.fail_after(5):
        send, recv = trio.open_memory_channel(2)
        fed = []

        async def feed():
            for f in frames:
                await session._forward(f, 1.0, send)
                fed.append(f)
            await send.aclose()

        async with trio.open_nursery() as n:
            n.start_soon(feed)
            await trio.testing.wait_all_tasks_blocked()
            assert len(fed) == 2  # two in the channel, the third waits for room: nothing dropped
            got = [ev.order.venue_order_id async for ev in recv if isinstance(ev, OrderOpened)]
        assert got == digests
