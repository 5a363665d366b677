"""Fault matrix, OX.FUN: the real Daemon in-process against OxfunSim over 127.0.0.1 sockets.

Oracle: the sim's own order book (``sim.open_orders``). Each test states its bound with
``trio.fail_after`` and checks that the trip is not lost, that the venue ends with zero open
orders (or that the daemon alarms when it truly cannot act), and that the audit log is complete
and parseable. The daemon's request timeout is 1 s, so "slow venue" faults stay fast.
"""

from __future__ import annotations

import trio

from .fault_venues import VENUES, fault_run
from .harness import (
    OX_MARKETS,
    OX_VENUE,
    alarm_records,
    assert_trip_audit_complete,
    check_restart_audit,
    kill9_midtrip_then_restart,
    trip,
    venue_flat,
    wait_for,
)

OX = VENUES["oxfun"]
N = OX.n


def _results(recs, **match):
    return [r for r in recs if r["event"] == "cancel_result" and all(r.get(k) == v for k, v in match.items())]


async def test_socket_dropped_mid_cancel_1006(tmp_path):
    async with fault_run(OX, tmp_path, deadline_s=15) as run:
        w, d, nursery = run.w, run.d, run.nursery
        dropped = []

        def on_cancel(t, tag, n):
            if not dropped:
                dropped.append(t)
                nursery.start_soon(w.sim.drop_connections, w.key)

        await w.sim.inject_fault("drop_acks")  # the first frame is processed, its ack lost
        w.sim.on_cancel_received = on_cancel
        await trip(d)
        await wait_for(lambda: dropped)
        await w.sim.inject_fault("clear")
        await run.wait_flat(8)  # bound: reconnect + reconcile + re-plan
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    assert any(r["event"] == "venue_disconnected" for r in recs)
    assert _results(recs, outcome="unknown")


async def test_cancel_rejected_already_gone_100005_while_orders_still_open(tmp_path):
    """The venue claims 100005 (not found) for every WS cancel, but the orders are still open:
    the daemon must not believe it; the snapshot shows them and it escalates (REST)."""
    async with fault_run(OX, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("reject_cancels", code="100005")
        await trip(d)
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    assert d.engine.latch.tripped


async def test_cancel_of_orders_gone_behind_our_back_100005(tmp_path):
    """Orders vanish from the venue without a push: the cancels get a genuine 100005."""
    async with fault_run(OX, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        acct = w.sim.accounts[w.key]
        for oid in list(acct.orders)[:10]:
            del acct.orders[oid]  # silently gone (filled/cancelled elsewhere, push lost)
        await trip(d)
        await run.wait_flat(6)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    assert sum(r["n_gone"] for r in _results(recs)) >= 10


async def test_async_cancel_reject_100004_race(tmp_path):
    """Orders fill while the cancel is in flight: ack true, then an async CANCEL 100004."""
    async with fault_run(OX, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("lose_race")
        await trip(d)
        await run.wait_flat(6)
    recs = run.recs
    assert w.sim.accounts[w.key].counters.async_rejects_sent >= 1
    assert_trip_audit_complete(recs, OX_VENUE)


async def test_race_mode_unknown_order_100004(tmp_path):
    """The venue's 'race' reply for unknown ids: ack true, then async 100004 (never a success)."""
    async with fault_run(OX, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("unknown_cancel_mode", mode="race")
        acct = w.sim.accounts[w.key]
        for oid in list(acct.orders)[:5]:
            del acct.orders[oid]
        await trip(d)
        await run.wait_flat(6)
    recs = run.recs
    assert acct.counters.async_rejects_sent >= 5
    assert_trip_audit_complete(recs, OX_VENUE)


async def test_rate_limited_20007_and_http_429(tmp_path):
    async with fault_run(OX, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("reject_cancels", code="20007")
        await w.sim.inject_fault("rest", mode="429", count=3)
        await trip(d)
        await wait_for(lambda: d.engine.counters.cancel_failures >= 1)
        await w.sim.inject_fault("reject_cancels", code=None)  # the limit window passes
        await run.wait_flat(10)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    assert _results(recs, outcome="rejected", code="20007") or _results(recs, outcome="rate_limited")


async def test_maintenance_000101(tmp_path):
    async with fault_run(OX, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("reject_cancels", code="000101")
        await w.sim.inject_fault("rest", mode="maintenance", count=4)
        await trip(d)
        await wait_for(lambda: d.engine.counters.cancel_failures >= 1)
        assert w.open_orders()  # nothing happened at the venue
        await w.sim.inject_fault("reject_cancels", code=None)  # maintenance ends
        await run.wait_flat(10)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    bad = [r for r in _results(recs) if r["outcome"] != "ok"]
    assert bad and all(r["outcome"] != "ok" for r in bad)


async def test_html_403_from_rest(tmp_path):
    """REST answers an HTML 403 page (firewall): verification snapshots fail as unknown,
    the daemon retries and only declares flat from a real snapshot."""
    async with fault_run(OX, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("rest", mode="403", count=4)
        await trip(d)
        await run.wait_flat(10)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    vf = [r for r in recs if r["event"] == "verify_failed"]
    assert vf and any("403" in r["error"] for r in vf), vf
    assert w.sim.faults.rest_remaining == 0


async def test_pongs_stop(tmp_path):
    # tickers slowed down so that pongs are the only traffic on an idle socket
    async with fault_run(OX, tmp_path, deadline_s=20, sim_kw={"ticker_interval_s": 3600.0},
                         venue_kw={"ping_interval": "300ms", "pong_timeout": "300ms"}) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("stop_pong")
        await wait_for(lambda: d.venues[OX_VENUE].session.connections_made >= 2)  # dead socket noticed
        await trip(d)
        await run.wait_flat(8)
    assert_trip_audit_complete(run.recs, OX_VENUE, need_cancel=False)
    assert any(r["event"] == "venue_disconnected" for r in run.recs)


async def test_auth_rejected_on_reconnect_alarms_and_still_cancels_over_rest(tmp_path):
    async with fault_run(OX, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("refuse_logins", code="20000")
        await w.sim.drop_connections(w.key)
        await wait_for(lambda: f"auth:{OX_VENUE}" in d.engine.alarms)  # loud
        st = d.status()
        assert st["alarms"] and "credentials rejected" in st["alarms"][f"auth:{OX_VENUE}"]
        await trip(d)
        await run.wait_flat(8)  # the WS is refused; REST still works
        await w.sim.inject_fault("clear")
        await wait_for(lambda: f"auth:{OX_VENUE}" not in d.engine.alarms)  # recovers
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    assert any(r["key"] == f"auth:{OX_VENUE}" for r in alarm_records(recs))


BAD_FRAMES = [
    "{not json",                                          # malformed
    '{"table": "order", "data": [{"orderId": "12',        # truncated
    '{"table":"order","data":[' + ",".join(['{"orderId":"1"}'] * 5000) + "]}",  # oversized
    '{"table": "weather", "data": []}',                   # unknown table
    '{"event": "surprise", "success": true}',             # unknown event
    "[1, 2, 3]",                                          # wrong type
    '{"table": "order", "data": [{"orderId": "' + "9" * 400 + '", "marketCode": "<script>"}]}',  # hostile id
    '{"table": "order", "data": "not a list"}',
    "\x00\xff garbage",
    "",
]


async def test_malformed_truncated_oversized_unknown_frames(tmp_path):
    async with fault_run(OX, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        conns = [c for c in w.sim._conns.values() if c.account is not None]
        assert conns
        for frame in BAD_FRAMES:
            for c in conns:
                await w.sim._send(c, frame)
        await wait_for(lambda: d.engine.counters.bad_frames >= 7)
        assert d.engine.state.open_count(OX_VENUE) == N  # hostile frames did not touch the book
        assert d.venues[OX_VENUE].session.connections_made == 1  # still on the same socket
        await trip(d)
        await run.wait_flat(6)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)


async def test_venue_unreachable_alarms_loudly(tmp_path):
    """WS logins refused and REST in maintenance: nothing can be done or verified. The trip
    stays latched and the daemon alarms (status + audit); when the venue returns, it goes flat."""
    async with fault_run(OX, tmp_path, deadline_s=25) as run:
        w, d = run.w, run.d
        await w.sim.inject_fault("refuse_logins", code="20000")
        await w.sim.inject_fault("rest", mode="maintenance", count=10**6)
        await w.sim.drop_connections(w.key)
        await trip(d)
        with trio.fail_after(10):
            await wait_for(lambda: f"unverified:{OX_VENUE}" in d.engine.alarms)
        assert len(w.open_orders()) == N and not venue_flat(d, OX_VENUE)
        assert d.status()["alarms"]
        await w.sim.inject_fault("clear")
        await run.wait_flat(10)
        await wait_for(lambda: f"unverified:{OX_VENUE}" not in d.engine.alarms)
    recs = run.recs
    assert_trip_audit_complete(recs, OX_VENUE)
    assert any(r["key"] == f"unverified:{OX_VENUE}" for r in alarm_records(recs))


async def test_sigkill_mid_trip_then_restart(tmp_path):
    """Subprocess ``python -m killswitch run``; SIGKILL as the first cancel frame arrives."""
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            w = await OX.start(nursery, sim_clock=None, sim_kw={})
            await OX.place_book(w)
            seen = []
            w.sim.on_cancel_received = lambda t, tag, n: seen.append(t)

            def hold():  # inject_fault's effect, synchronously (before SIGUSR1 is sent)
                w.sim.faults.reject_cancels_code = "000101"
                w.sim.faults.rest_mode, w.sim.faults.rest_remaining = "maintenance", 10**6

            def release():
                w.sim.faults.reject_cancels_code = None
                w.sim.faults.rest_mode, w.sim.faults.rest_remaining = None, 0

            recs = await kill9_midtrip_then_restart(
                tmp_path, venue_yaml=w.venue_yaml(), env=w.env(), venue=OX_VENUE,
                open_count=lambda: len(w.open_orders()),
                hold_cancels=hold, release_cancels=release,
                cancel_seen=lambda: bool(seen),
                place_more=lambda: w.place(5, OX_MARKETS[1], side="SELL", price="999999"))
            nursery.cancel_scope.cancel()
    check_restart_audit(recs, OX_VENUE)
