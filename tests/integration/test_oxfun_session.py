"""OX.FUN session against the simulated exchange over real 127.0.0.1 sockets."""

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
    VenueAuthFailed,
    VenueConnected,
    VenueDisconnected,
)
from killswitch.secrets import Secret
from killswitch.venues.base import AuthError, OutcomeUnknown, VenueSession
from killswitch.venues.oxfun.session import OxfunSession

from .oxfun_fixtures import harness, make_config, running_sim, wait_until

BTC, ETH, SOL = "BTC-USD-SWAP-LIN", "ETH-USD-SWAP-LIN", "SOL-USD-SWAP-LIN"


def refs(ids, market):
    return [OrderRef("ox-test", market, i) for i in ids]


async def test_connect_reconciles_then_reports_connected():
    async def setup(sim, key):
        await sim.place_orders(key, market=BTC, price="50000", count=3)
        await sim.place_orders(key, market=BTC, side="SELL", order_type="STOP_LIMIT", price="40000", stop_price="45000")

    with trio.fail_after(10):
        async with harness(setup=setup) as h:
            assert isinstance(h.session, VenueSession)
            kinds = [type(e) for e in h.rec.events if type(e) in (OpenOrdersSnapshot, EquityObserved, VenueConnected)]
            assert kinds[:3] == [OpenOrdersSnapshot, EquityObserved, VenueConnected]
            snap = h.rec.of(OpenOrdersSnapshot)[0]
            assert snap.purpose == "reconcile" and len(snap.orders) == 4
            assert sum(o.is_trigger for o in snap.orders) == 1
            assert h.rec.of(EquityObserved)[0].equity == Decimal("100000")


async def test_wrong_secret_is_auth_error_at_start():
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, _ = sim.add_account()
            session = OxfunSession(make_config(sim), api_key=Secret(key), api_secret=Secret("wrong-secret-value"), clock=Clock())
            send, _recv = trio.open_memory_channel(100)
            with pytest.raises(AuthError) as info:
                await session.run(send)
            assert info.value.code == "20000"
            assert "ox-test" in str(info.value) and "20000" in str(info.value)
            assert "wrong-secret-value" not in str(info.value)


async def test_clock_skew_20024_is_not_a_credentials_error_login_resigns_on_venue_time():
    # Was: AuthError 20024 ("check the API key and secret"). The 20024 reply carries the
    # venue's clock; the login is re-signed on it (issue #13 item 1).
    with trio.fail_after(10):
        async with running_sim() as sim:
            key, secret = sim.add_account()
            session = OxfunSession(make_config(sim), api_key=Secret(key), api_secret=Secret(secret),
                                   clock=Clock(wall_offset_ms=120_000))
            send, _recv = trio.open_memory_channel(100)
            async with trio.open_nursery() as n:
                await n.start(session.run, send)
                assert abs(session.clock_skew_ms() + 120_000) < 1_000
                n.cancel_scope.cancel()


async def test_order_flow_pushes():
    with trio.fail_after(10):
        async with harness() as h:
            ids = await h.sim.place_orders(h.api_key, market=ETH, price="2000", count=2)
            await h.rec.wait_for(lambda: len(h.rec.of(OrderOpened)) == 2)
            res = await h.session.cancel_orders(refs(ids[:1], ETH), trip_id=1, on_sent=lambda a: None)
            assert res[0].outcome == "ok" and res[0].cancelled_ids == (ids[0],)
            closed = await h.rec.wait_for(lambda: h.rec.of(OrderClosed))
            assert closed[0].venue_order_id == ids[0]
            # A crossing order fills: OrderClosed(FILLED) and a position/equity update.
            (fill_id,) = await h.sim.place_orders(h.api_key, market=ETH, price="3100", qty="2")
            await h.rec.wait_for(lambda: any(e.venue_order_id == fill_id for e in h.rec.of(OrderClosed)))
            await h.sim.set_mark(ETH, "3010")
            await h.rec.wait_for(lambda: h.rec.of(EquityObserved)[-1].equity == Decimal("100020"))


async def test_cancel_100_orders_across_three_markets():
    with trio.fail_after(15):
        async with harness() as h:
            all_refs = []
            for market, price in ((BTC, "50000"), (ETH, "2000"), (SOL, "100")):
                all_refs += refs(await h.sim.place_orders(h.api_key, market=market, price=price, count=34), market)
            sent = []
            res = await h.session.cancel_orders(all_refs[:100], trip_id=7, on_sent=sent.append)
            assert len(res) == len(sent) == 5 and all(r.outcome == "ok" for r in res)
            assert sum(len(r.cancelled_ids) for r in res) == 100
            assert len({a.request_id for a in sent}) == 5
            assert len(h.sim.open_orders(h.api_key)) == 2
            res = await h.session.cancel_orders(all_refs[100:], trip_id=7, on_sent=sent.append)
            assert h.sim.open_orders(h.api_key) == []


async def test_cancel_all_and_products_via_rest():
    with trio.fail_after(10):
        async with harness() as h:
            await h.sim.place_orders(h.api_key, market=BTC, price="50000", count=5)
            await h.sim.place_orders(h.api_key, market=ETH, price="2000", count=5)
            await h.sim.place_orders(h.api_key, market=SOL, price="100", count=2, order_type="STOP_LIMIT", stop_price="90",
                                     side="SELL")
            sent = []
            res = await h.session.cancel_products([BTC], include_triggers=True, trip_id=1, on_sent=sent.append)
            assert [r.outcome for r in res] == ["ok"] and len(sent) == 1 and sent[0].products == (BTC,)
            assert {o["marketCode"] for o in h.sim.open_orders(h.api_key)} == {ETH, SOL}
            res = await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=sent.append)
            assert res[0].outcome == "ok" and res[0].message == "Orders queued for cancelation"
            assert await h.session.fetch_open_orders() == ()
            res = await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=sent.append)
            assert res[0].outcome == "ok" and res[0].message == "No working orders found"


async def test_not_found_and_lost_race_are_gone_ids():
    with trio.fail_after(10):
        async with harness() as h:
            ids = await h.sim.place_orders(h.api_key, market=BTC, price="50000", count=2)
            res = await h.session.cancel_orders(refs(["1000000999999"], BTC), trip_id=1, on_sent=lambda a: None)
            assert res[0].outcome == "ok" and res[0].gone_ids == ("1000000999999",)
            await h.sim.inject_fault("unknown_cancel_mode", mode="race")
            res = await h.session.cancel_orders(refs(["1000000999998"], BTC), trip_id=1, on_sent=lambda a: None)
            assert res[0].outcome == "ok" and res[0].gone_ids == ("1000000999998",)
            await h.sim.inject_fault("lose_race")
            res = await h.session.cancel_orders(refs(ids, BTC), trip_id=1, on_sent=lambda a: None)
            assert res[0].gone_ids == tuple(sorted(ids)) and res[0].cancelled_ids == ()
            await h.sim.inject_fault("clear")
            await h.sim.inject_fault("reject_cancels", code="20001")
            (oid,) = await h.sim.place_orders(h.api_key, market=BTC, price="50000")
            res = await h.session.cancel_orders(refs([oid], BTC), trip_id=1, on_sent=lambda a: None)
            assert res[0].outcome == "rejected" and res[0].code == "20001"


async def test_socket_drop_mid_cancel_is_unknown_then_reconciles():
    with trio.fail_after(15):
        async with harness() as h:
            ids = await h.sim.place_orders(h.api_key, market=BTC, price="50000", count=3)
            await h.sim.inject_fault("ack_delay", seconds=5)
            results = []
            sent = trio.Event()

            async def cancel():
                results.extend(await h.session.cancel_orders(refs(ids, BTC), trip_id=3, on_sent=lambda a: sent.set()))

            h.nursery.start_soon(cancel)
            await sent.wait()
            await wait_until(lambda: h.sim.state()["accounts"][h.api_key]["counters"]["cancels_received"] == 3)
            await h.sim.inject_fault("ack_delay", seconds=0)
            await h.sim.drop_connections(h.api_key)
            await wait_until(lambda: results)
            assert results[0].outcome == "unknown" and results[0].code == "1006"
            await h.rec.wait_for(lambda: h.rec.of(VenueDisconnected))
            await h.rec.wait_for(lambda: len(h.rec.of(VenueConnected)) == 2)
            snaps = [s for s in h.rec.of(OpenOrdersSnapshot) if s.purpose == "reconcile"]
            assert len(snaps) == 2 and snaps[1].orders == ()


async def test_pong_timeout_detected_and_reconnects():
    with trio.fail_after(10):
        async with harness(ping_interval_s=0.1, pong_timeout_s=0.3) as h:
            await h.sim.inject_fault("pong", enabled=False)
            dis = await h.rec.wait_for(lambda: h.rec.of(VenueDisconnected))
            assert "pong" in dis[0].reason
            await h.sim.inject_fault("pong", enabled=True)
            await h.rec.wait_for(lambda: len(h.rec.of(VenueConnected)) >= 2)


async def test_later_login_refusal_reports_and_rest_fallback_cancels():
    with trio.fail_after(10):
        async with harness() as h:
            ids = await h.sim.place_orders(h.api_key, market=BTC, price="50000", count=10)
            await h.sim.inject_fault("refuse_logins", code="20025")
            await h.sim.drop_connections(h.api_key)
            failed = await h.rec.wait_for(lambda: h.rec.of(VenueAuthFailed))
            assert failed[0].code == "20025"
            sent = []
            res = await h.session.cancel_orders(refs(ids + ["1000000999999"], BTC), trip_id=4, on_sent=sent.append)
            assert [r.outcome for r in res] == ["ok", "ok"] and all(a.detail["transport"] == "rest" for a in sent)
            assert sorted(i for r in res for i in r.cancelled_ids) == sorted(ids)
            assert res[1].gone_ids == ("1000000999999",)
            await h.sim.inject_fault("refuse_logins", enabled=False)
            await h.rec.wait_for(lambda: len(h.rec.of(VenueConnected)) >= 2)


async def test_rest_faults_map_to_outcomes():
    with trio.fail_after(10):
        async with harness() as h:
            noop = lambda a: None  # noqa: E731
            await h.sim.inject_fault("rest", mode="429", count=1)
            assert (await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=noop))[0].outcome == "rate_limited"
            await h.sim.inject_fault("rest", mode="403", count=1)
            r = (await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=noop))[0]
            assert r.outcome == "unknown" and "non-JSON" in r.message
            await h.sim.inject_fault("rest", mode="maintenance", count=1)
            r = (await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=noop))[0]
            assert r.outcome == "unknown" and r.code == "000101" and r.venue_state == "maintenance"
            await h.sim.inject_fault("rest", mode="403", count=1)
            with pytest.raises(OutcomeUnknown):
                await h.session.fetch_open_orders()
            assert (await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=noop))[0].outcome == "ok"


async def test_push_before_ack_and_dropped_acks():
    with trio.fail_after(10):
        async with harness(request_timeout_s=0.3) as h:
            await h.sim.inject_fault("push_before_ack")
            ids = await h.sim.place_orders(h.api_key, market=BTC, price="50000", count=3)
            res = await h.session.cancel_orders(refs(ids[:2], BTC), trip_id=1, on_sent=lambda a: None)
            assert res[0].outcome == "ok" and res[0].cancelled_ids == tuple(sorted(ids[:2]))
            await h.sim.inject_fault("drop_acks")
            res = await h.session.cancel_orders(refs(ids[2:], BTC), trip_id=1, on_sent=lambda a: None)
            assert res[0].outcome == "unknown" and res[0].code == "timeout"
            assert h.sim.open_orders(h.api_key) == []  # it did act: unknown is not "failed"


async def test_secrets_never_in_logs_or_repr(capsys):
    with trio.fail_after(10):
        async with harness() as h:
            await h.session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=lambda a: None)
            await h.sim.drop_connections(h.api_key)
            await h.rec.wait_for(lambda: len(h.rec.of(VenueConnected)) >= 2)
            out = capsys.readouterr()
            assert h.api_secret not in out.out + out.err
            assert h.api_secret not in repr(h.session.__dict__)
