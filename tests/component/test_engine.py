"""Engine + executor + latch + audit with fake venues, under autojump_clock."""

from decimal import Decimal

import trio

from killswitch.engine.latch import LatchState, LatchStore
from killswitch.model import CancelScope, EquityObserved, ResetCommand, TripCommand

from .fakes import NADO_LIKE, OX_LIKE, EquityFloorRule, FakeSession
from .harness import running


class _Crash(Exception):
    pass


def kinds(records):
    return [r["event"] for r in records]


async def test_breach_trips_cancels_and_confirms_flat(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox", OX_LIKE)
        ox.add("BTC-USD-SWAP-LIN", 40)
        ox.add("ETH-USD-SWAP-LIN", 30)
        rule = EquityFloorRule("floor", Decimal("900"))
        async with running(tmp_path, [ox], [rule]) as h:
            await h.send.send(EquityObserved("ox", Decimal("1000")))
            await h.until(lambda: h.engine.counters.events >= 3)
            assert h.engine.latch.state is LatchState.ARMED
            await h.send.send(EquityObserved("ox", Decimal("899.99")))
            await h.until(lambda: h.engine.all_flat())
            assert ox.orders == {}
            assert h.engine.latch.tripped
            recs = await h.audit_records()
        ks = kinds(recs)
        assert ks.index("cancel_sent") < ks.index("flat")
        trip = next(r for r in recs if r["event"] == "trip")
        assert trip["rule"] == "floor" and trip["observed"] == "899.99"
        # 70 known orders on an OX-like venue: by id, 4 WS batches (<= 20 each).
        assert [c[0] for c in ox.calls] == ["cancel_orders"]
        assert sum(1 for r in recs if r["event"] == "cancel_result" and r["outcome"] == "ok") == 1
        flat = next(r for r in recs if r["event"] == "flat")
        assert flat["evidence"] == "verify snapshot"
        # The latch is on disk.
        assert LatchStore(tmp_path / "state").load().tripped


async def test_first_cancel_is_sent_before_trip_bookkeeping(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox", OX_LIKE)
        ox.add("BTC", 3)
        async with running(tmp_path, [ox], [EquityFloorRule("floor", Decimal(1))]) as h:
            await h.send.send(EquityObserved("ox", Decimal(0)))
            await h.until(lambda: h.engine.all_flat())
            recs = await h.audit_records()
        ks = kinds(recs)
        assert ks.index("cancel_sent") < ks.index("trip")


async def test_rule_exception_trips_fail_closed(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 2)
        async with running(tmp_path, [ox], [EquityFloorRule("bad", Decimal(1), explode=True)]) as h:
            await h.send.send(EquityObserved("ox", Decimal(5)))
            await h.until(lambda: h.engine.all_flat())
            assert ox.orders == {}
            trip = h.engine.latch.trips[0]
            assert trip.rule == "bad" and "ZeroDivisionError" in trip.observed


async def test_unknown_outcome_is_retried_until_flat(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 5)
        ox.fail_cancels = 2
        async with running(tmp_path, [ox]) as h:
            await h.send.send(TripCommand(reason="test", source="cli"))
            await h.until(lambda: h.engine.all_flat())
            recs = await h.audit_records()
        outcomes = [r["outcome"] for r in recs if r["event"] == "cancel_result"]
        assert outcomes[:2] == ["unknown", "unknown"] and outcomes[-1] == "ok"
        # Every attempt is a distinct request (fresh nonce at the venue).
        nonces = [r["nonce"] for r in recs if r["event"] == "cancel_sent"]
        assert len(nonces) == len(set(nonces)) >= 3
        # Round 2+ escalates to a bulk verb.
        assert ox.calls[0][0] == "cancel_orders" and ox.calls[1][0] == "cancel_all_orders"


async def test_failed_verification_alarms_and_keeps_trying(tmp_path, autojump_clock):
    with trio.fail_after(60):
        ox = FakeSession("ox")
        ox.add("BTC", 1)
        ox.fail_verifies = 4
        async with running(tmp_path, [ox]) as h:
            await h.send.send(TripCommand(reason="test"))
            await h.until(lambda: any(k.startswith("unverified:") for k in h.engine.alarms))
            await h.until(lambda: h.engine.all_flat())
            assert not any(k.startswith("unverified:") for k in h.engine.alarms)


async def test_sweep_cancels_orders_placed_after_trip(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 3)
        async with running(tmp_path, [ox]) as h:
            await h.send.send(TripCommand(reason="test"))
            await h.until(lambda: h.engine.all_flat())
            new = await ox.push_new("BTC", 5)
            await h.until(lambda: not any(o.venue_order_id in ox.orders for o in new))
            await h.until(lambda: h.engine.all_flat())
            assert h.engine.counters.sweeps == 5
            assert ox.orders == {}


async def test_orders_missed_by_stream_are_found_by_repoll(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        async with running(tmp_path, [ox], repoll_interval_s=0.5) as h:
            await h.send.send(TripCommand(reason="test"))
            await h.until(lambda: h.engine.all_flat())
            before = h.engine.counters.cancel_requests
            ox.add("BTC", 4)  # no push: the stream missed them
            await h.until(lambda: not ox.orders)
            await h.until(lambda: h.engine.all_flat())
            assert h.engine.counters.cancel_requests > before


async def test_scope_limits_products_and_venues(tmp_path, autojump_clock):
    with trio.fail_after(30):
        a, b = FakeSession("a", NADO_LIKE), FakeSession("b", NADO_LIKE)
        a.add("1", 10); a.add("2", 3); b.add("1", 3)
        scope = CancelScope(venues=frozenset({"a"}), products=frozenset({"1"}))
        async with running(tmp_path, [a, b]) as h:
            await h.send.send(TripCommand(reason="partial", scope=scope))
            await h.until(lambda: h.engine.all_flat())
            assert {o.product for o in a.orders.values()} == {"2"} and len(a.orders) == 3
            assert len(b.orders) == 3
            # 10 digests would cost 10; one product costs 5: the planner picks the product verb.
            assert a.calls == [("cancel_products", ("1",))]


async def test_keep_protective_stops_on_single_plane_venue(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 3)
        stop = ox.add("BTC", 1, is_trigger=True, reduce_only=True)[0]
        other_stop = ox.add("BTC", 1, is_trigger=True, reduce_only=False)[0]
        async with running(tmp_path, [ox]) as h:
            await h.send.send(TripCommand(reason="t", scope=CancelScope(keep_protective_stops=True)))
            await h.until(lambda: h.engine.all_flat())
            assert list(ox.orders) == [stop.venue_order_id]
            assert other_stop.venue_order_id not in ox.orders


async def test_latch_survives_restart_and_resweeps(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 2)
        async with running(tmp_path, [ox]) as h:
            await h.send.send(TripCommand(reason="first life"))
            await h.until(lambda: h.engine.all_flat())
        # Orders appeared while the daemon was down.
        ox2 = FakeSession("ox")
        ox2.add("BTC", 7)
        async with running(tmp_path, [ox2]) as h:
            assert h.engine.latch.tripped
            await h.until(lambda: h.engine.all_flat())
            assert ox2.orders == {}
            recs = await h.audit_records()
        assert "startup_tripped" in kinds(recs)


async def test_reset_is_audited_and_rearms(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        rule = EquityFloorRule("floor", Decimal(10))
        async with running(tmp_path, [ox], [rule], rule_factory=lambda: [EquityFloorRule("floor", Decimal(10))]) as h:
            await h.send.send(EquityObserved("ox", Decimal(1)))
            await h.until(lambda: h.engine.all_flat())
            await h.send.send(ResetCommand(operator="alice", reason="drill over"))
            await h.until(lambda: not h.engine.latch.tripped)
            recs = await h.audit_records()
            reset = next(r for r in recs if r["event"] == "reset")
            assert reset["operator"] == "alice" and reset["reason"] == "drill over"
            assert LatchStore(tmp_path / "state").load().state is LatchState.ARMED
            # Armed again: a new breach trips again.
            await h.send.send(EquityObserved("ox", Decimal(2)))
            await h.until(lambda: h.engine.latch.tripped)


async def test_alert_only_rule_never_cancels(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 2)
        async with running(tmp_path, [ox], [EquityFloorRule("warn", Decimal(10), latch=False)]) as h:
            await h.send.send(EquityObserved("ox", Decimal(1)))
            await h.send.send(EquityObserved("ox", Decimal(2)))
            await h.until(lambda: h.engine.counters.alerts == 1 and h.engine.counters.events >= 4)
            assert not h.engine.latch.tripped and len(ox.orders) == 2 and ox.calls == []


async def test_dry_run_sends_nothing_but_audits(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        ox.add("BTC", 2)
        async with running(tmp_path, [ox], dry_run=True) as h:
            await h.send.send(TripCommand(reason="drill"))
            await h.until(lambda: h.engine.counters.cancel_requests >= 1)
            recs = await h.audit_records()
        assert ox.calls == [] and len(ox.orders) == 2
        assert "would_cancel" in kinds(recs)


async def test_latch_is_on_disk_when_the_cancel_hits_the_wire(tmp_path, autojump_clock):
    """Phase 1 (page cache) precedes the cancel; fsync follows it. If the process dies right
    after the cancel is sent, the next start reads TRIPPED."""
    with trio.fail_after(30):
        seen_on_disk = []
        ox = FakeSession("ox")
        ox.add("BTC", 1)
        original = ox._cancel

        async def spy(*a, **kw):
            seen_on_disk.append(LatchStore(tmp_path / "state").load().tripped)
            return await original(*a, **kw)

        ox._cancel = spy
        try:
            async with running(tmp_path, [ox]) as h:
                await h.send.send(TripCommand(reason="crash test"))
                await h.until(lambda: ox.sent_times)
                raise _Crash  # the process dies with the cancel on the wire
        except* _Crash:
            pass
        assert seen_on_disk == [True]
        async with running(tmp_path, [FakeSession("ox")]) as h:
            assert h.engine.latch.tripped


async def test_declared_cash_flow_uses_the_venue_equity_currency(tmp_path, autojump_clock):
    from killswitch.model import CashFlowObserved, DeclareCashFlow

    seen = []

    class Spy(EquityFloorRule):
        def on_event(self, ev, book, now_s):
            if isinstance(ev, CashFlowObserved):
                seen.append(ev)
                return None
            return super().on_event(ev, book, now_s)

    with trio.fail_after(30):
        ox = FakeSession("ox")
        rule = Spy("floor", Decimal(0), watches=frozenset({EquityObserved, CashFlowObserved}))
        async with running(tmp_path, [ox], [rule]) as h:
            await h.send.send(EquityObserved("ox", Decimal(100), currency="OX"))
            await h.send.send(DeclareCashFlow("ox", Decimal("-40"), operator="alice"))
            await h.until(lambda: seen)
        assert seen[0].currency == "OX" and seen[0].amount == Decimal("-40")


async def test_a_feed_that_stays_down_alarms_and_clears_on_reconnect(tmp_path, autojump_clock):
    from killswitch.model import VenueConnected, VenueDisconnected

    with trio.fail_after(60):
        ox = FakeSession("ox")
        async with running(tmp_path, [ox]) as h:
            await h.send.send(VenueDisconnected("ox", "1006", trio.current_time()))
            await h.until(lambda: "feed:ox" in h.engine.alarms)
            assert "disconnected" in h.engine.alarms["feed:ox"]
            await h.send.send(VenueConnected("ox", trio.current_time()))
            await h.until(lambda: "feed:ox" not in h.engine.alarms)
            recs = await h.audit_records()
        assert [r["key"] for r in recs if r["event"] in ("alarm", "alarm_cleared")] == ["feed:ox", "feed:ox"]
