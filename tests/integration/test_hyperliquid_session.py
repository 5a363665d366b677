"""HyperliquidSession against the simulator over real sockets: reconcile, stream, cancels
(resting, trigger, cloid, TWAP, partial batches), fresh persisted nonces, auth refusal."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from killswitch.clock import Clock
from killswitch.model import (
    EquityObserved,
    OpenOrdersSnapshot,
    OrderClosed,
    OrderOpened,
    OrderRef,
    PositionObserved,
    Side,
    VenueConnected,
)
from killswitch.secrets import Secret
from killswitch.venues.base import AuthError
from killswitch.venues.hyperliquid import wire
from killswitch.venues.hyperliquid.session import HyperliquidSession
from killswitch.venues.hyperliquid.sim.server import HyperliquidSim

from .hyperliquid_fixtures import KS_AGENT, KS_AGENT_KEY, MASTER, make_config, sim_and_session, start_sim


async def test_reconcile_then_stream_orders_and_equity():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, session, log):
            snap = log.of(OpenOrdersSnapshot)[0]
            assert snap.purpose == "reconcile" and snap.orders == ()
            assert log.of(EquityObserved)[0].equity == Decimal(10_000)
            assert log.of(VenueConnected)
            oids = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=2)
            await log.wait_for(lambda evs: {e.order.venue_order_id for e in evs if isinstance(e, OrderOpened)}
                               == {str(o) for o in oids})
            # a fill moves position and equity (clearinghouseState push)
            sim.core.accounts[MASTER].positions["BTC"] = (Decimal("0.1"), Decimal(60_000))
            sim.core.assets[0].mark = Decimal(59_000)
            sim.place(MASTER, "SOL", is_buy=True, price="200", size="1")  # crosses 150: fills
            await log.wait_for(lambda evs: any(isinstance(e, PositionObserved) and e.product == "SOL"
                                               and e.qty == 1 for e in evs))
            await log.wait_for(lambda evs: any(isinstance(e, EquityObserved) and e.equity == Decimal(9_900)
                                               for e in evs))


@pytest.mark.parametrize("over_ws", [True, False], ids=["ws-post", "rest"])
async def test_cancel_orders_batches_fast_trigger_cloid_and_twap_with_fresh_nonces(tmp_path, over_ws, monkeypatch):
    from killswitch.venues.hyperliquid import session as session_mod

    monkeypatch.setattr(session_mod, "TWAP_RELIST_S", 0.0)  # the TWAP below starts after the reconcile
    with trio.fail_after(20):
        async with sim_and_session(state_dir=tmp_path, cancel_batch_size=3, post_over_ws=over_ws) as (
                sim, session, log):
            acct = sim.core.accounts[MASTER]
            resting = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=5)
            trig = sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", reduce_only=True,
                             trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"})
            sim.core.next_oid += 1
            cl = sim.place(MASTER, "BTC", is_buy=True, price="50000", size="0.001")[0]
            acct.orders[cl].cloid = "0x" + "0f" * 16
            acct.twaps[77] = __import__("killswitch.venues.hyperliquid.sim.core", fromlist=["Twap"]).Twap(
                77, "SOL", 2, True, Decimal(10), 30, 0)
            listed = await session.fetch_open_orders()
            assert {o.venue_order_id for o in listed} >= {"twap:77", str(trig[0])}
            refs = [OrderRef("hl-test", "ETH", str(o)) for o in resting] + \
                [OrderRef("hl-test", "ETH", str(trig[0]), is_trigger=True),
                 OrderRef("hl-test", "BTC", "0x" + "0F" * 16), OrderRef("hl-test", "SOL", "twap:77"),
                 OrderRef("hl-test", "ETH", "999")]  # unknown: "never placed", i.e. gone
            sent = []
            results = await session.cancel_orders(refs, trip_id=1, on_sent=sent.append)
            assert not acct.orders and acct.twaps[77].status == "terminated"
            assert all(r.outcome == "ok" for r in results), results
            assert {x for r in results for x in r.cancelled_ids} == \
                {str(o) for o in resting} | {str(trig[0]), "0x" + "0F" * 16, "twap:77"}
            assert {x for r in results for x in r.gone_ids} == {"999"}
            # 5+1 fast resting (batches of 3) + 1 trigger + 1 cloid + 1 twap = 5 requests, 5 nonces
            nonces = [a.detail["nonce"] for a in sent]
            assert len(sent) == 5 and len(set(nonces)) == 5
            assert {a.detail["transport"] for a in sent} == {"ws" if over_ws else "rest"}
            assert {t for _, t in sim.exchange_log} >= {"cancel", "cancelByCloid", "twapCancel"}
            types = sorted(a.detail["type"] for a in sent)
            assert types == ["cancel", "cancel", "cancel", "cancelByCloid", "twapCancel"]
            # the high-water mark survives: a new source starts above every nonce sent
            from killswitch.venues.hyperliquid.nonce import NonceSource, nonce_path
            again = NonceSource(nonce_path(tmp_path, KS_AGENT))
            assert again.next(0) > max(nonces)


async def test_cancel_all_lists_then_cancels_everything_including_triggers_and_twaps():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, session, log):
            acct = sim.core.accounts[MASTER]
            sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=45)
            sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", reduce_only=True,
                      trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"})
            sent = []
            results = await session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=sent.append)
            assert not acct.orders
            assert sum(len(r.cancelled_ids) for r in results) == 46
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, OrderClosed)]) == 46)


async def test_a_batch_that_partly_fails_reports_per_order():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, session, log):
            trig = sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", reduce_only=True,
                             trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"})
            ok = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1")
            # a listing that (wrongly) named the trigger as resting: it lands in the f:true batch
            session._feed.note_listing([wire.OpenOrder("ETH", oid, Side.BUY, Decimal(2000), Decimal("0.1"))
                                        for oid in (ok[0], trig[0])])
            refs = [OrderRef("hl-test", "ETH", str(ok[0])), OrderRef("hl-test", "ETH", str(trig[0]))]
            (r,) = await session.cancel_orders(refs, trip_id=1, on_sent=lambda a: None)
            assert r.outcome == "ok" and r.code == "partial"
            assert r.cancelled_ids == (str(ok[0]),) and str(trig[0]) in r.message


async def test_a_key_that_is_no_agent_of_the_account_is_a_startup_auth_error():
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            sim = await start_sim(n)
            session = HyperliquidSession(make_config(sim), private_key=Secret("0x" + "99" * 32), clock=Clock())
            send, _recv = trio.open_memory_channel(100)
            with pytest.raises(AuthError, match="not an approved agent"):
                await session.run(send)
            n.cancel_scope.cancel()


async def test_idle_socket_is_closed_by_the_sim_after_60s_without_pings(autojump_clock):
    with trio.fail_after(200):
        async with trio.open_nursery() as n:
            sim = HyperliquidSim()
            await n.start(sim.serve)
            from killswitch.net import ws as wsmod
            ep = await wsmod.connect(sim.ws_url, deflate=False, timeout_s=5)
            t0 = trio.current_time()
            with pytest.raises(wsmod.WsClosed):
                while True:
                    await ep.receive()
            assert 60 <= trio.current_time() - t0 < 61 and sim.idle_closes == 1
            n.cancel_scope.cancel()


async def test_backstop_is_armed_refreshed_and_reported():
    from killswitch.model import BackstopObserved

    with trio.fail_after(30):
        async with sim_and_session(dms_after_s=6.0) as (sim, session, log):
            acct = sim.core.accounts[MASTER]
            first = (await log.wait_for(lambda evs: [e for e in evs if isinstance(e, BackstopObserved)]))[0]
            assert first.armed and first.fires_at_ms == acct.dms_time_ms
            # refreshed every T/3 = 2 s, always pushing the firing time out
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, BackstopObserved)]) >= 2)
            bs = [e for e in log.events if isinstance(e, BackstopObserved)]
            assert bs[1].fires_at_ms > bs[0].fires_at_ms and acct.dms_fired_today == 0


async def test_backstop_refused_by_the_volume_gate_reports_the_venues_reason():
    from killswitch.model import BackstopObserved

    with trio.fail_after(30):
        async with sim_and_session(dms_after_s=6.0, sim_kwargs={"dms_volume_gate": Decimal(10**9)}) as (
                sim, session, log):
            ev = (await log.wait_for(lambda evs: [e for e in evs if isinstance(e, BackstopObserved)]))[0]
            assert not ev.armed
            assert ev.unavailable_reason == ("Cannot set scheduled cancel time until enough volume traded. "
                                             "Required: $1000000000. Traded: $2000000.")


async def test_backstop_is_cleared_on_clean_shutdown_only_when_configured():
    from killswitch.model import BackstopObserved

    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            sim = await start_sim(n)
            acct = sim.core.accounts[MASTER]
            for clear in (False, True):
                session = HyperliquidSession(make_config(sim, dms_after_s=6.0, dms_clear_on_shutdown=clear),
                                             private_key=Secret(KS_AGENT_KEY), clock=Clock())
                send, recv = trio.open_memory_channel(1000)
                with trio.CancelScope() as cs:
                    async with trio.open_nursery() as inner:
                        await inner.start(session.run, send)
                        async for ev in recv:
                            if isinstance(ev, BackstopObserved):
                                break
                        cs.cancel()
                assert (acct.dms_time_ms is None) == clear
            n.cancel_scope.cancel()


async def test_an_order_on_a_coin_listed_after_start_up_is_still_cancelled():
    from killswitch.venues.hyperliquid.sim.core import Asset

    with trio.fail_after(20):
        async with sim_and_session() as (sim, session, log):
            sim.core.assets.append(Asset("NEWCOIN", 0, Decimal(50)))
            sim.core.asset_by_coin["NEWCOIN"] = len(sim.core.assets) - 1
            (oid,) = sim.place(MASTER, "NEWCOIN", is_buy=True, price="40", size="1")
            (r,) = await session.cancel_orders([OrderRef("hl-test", "NEWCOIN", str(oid))], trip_id=1,
                                               on_sent=lambda a: None)
            assert r.outcome == "ok" and r.cancelled_ids == (str(oid),)


async def test_reconnect_reconciles_orders_placed_while_down():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, session, log):
            n_conn = len(log.of(VenueConnected))
            await sim.drop_connections()
            oid = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1")[0]  # nobody subscribed
            await log.wait_for(lambda evs: len([e for e in evs if isinstance(e, VenueConnected)]) > n_conn)
            snaps = [e for e in log.events if isinstance(e, OpenOrdersSnapshot) and e.purpose == "reconcile"]
            assert str(oid) in {o.venue_order_id for o in snaps[-1].orders}


async def test_a_stalled_feed_is_caught_by_the_drift_poll():
    with trio.fail_after(20):
        async with sim_and_session() as (sim, session, log):
            sim.set_faults(stall_pushes=True)  # socket open, pongs flowing, pushes lost
            oid = sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1")[0]
            snap = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, OpenOrdersSnapshot)
                                                   and e.purpose == "poll"
                                                   and str(oid) in {o.venue_order_id for o in e.orders}])
            assert snap
            assert not [e for e in log.events if isinstance(e, OrderOpened) and e.order.venue_order_id == str(oid)]
