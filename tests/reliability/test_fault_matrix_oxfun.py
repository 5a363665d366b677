"""Fault matrix, OX.FUN: the real Daemon in-process against OxfunSim over 127.0.0.1 sockets.

Oracle: the sim's own order book (``sim.open_orders``). Each test states its bound with
``trio.fail_after`` and checks that the trip is not lost, that the venue ends with zero open
orders (or that the daemon alarms when it truly cannot act), and that the audit log is complete
and parseable. The daemon's request timeout is 1 s, so "slow venue" faults stay fast.
"""

from __future__ import annotations

import trio

from killswitch.clock import Clock

from .harness import (
    OX_MARKETS,
    OX_VENUE,
    alarm_records,
    assert_trip_audit_complete,
    audit_records,
    daemon_yaml,
    running_daemon,
    start_ox,
    trip,
    venue_flat,
    wait_for,
)

N = 30


async def _setup(nursery, tmp_path, *, clock=None, sim_options=None, venue_kw=None, n=N, **yaml_kw):
    w = await start_ox(nursery, **(sim_options or {}))
    await w.place(n // 2, OX_MARKETS[0])
    await w.place(n - n // 2, OX_MARKETS[1], side="SELL", price="999999")
    text = daemon_yaml(tmp_path, w.venue_yaml(**(venue_kw or {})), **yaml_kw)
    return w, text


def _flat(w, d) -> bool:
    return not w.open_orders() and venue_flat(d, OX_VENUE)


def _results(recs, **match):
    return [r for r in recs if r["event"] == "cancel_result" and all(r.get(k) == v for k, v in match.items())]


async def test_socket_dropped_mid_cancel_1006(tmp_path):
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
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
                with trio.fail_after(8):  # bound: reconnect + reconcile + re-plan
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert any(r["event"] == "venue_disconnected" for r in recs)
    assert _results(recs, outcome="unknown")


async def test_ack_never_arrives(tmp_path):
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("drop_acks")
                await trip(d)
                with trio.fail_after(6):  # request timeout 1 s + snapshot
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    # a missing ack is an unknown outcome, never a success
    assert _results(recs, outcome="unknown", code="timeout")
    assert not _results(recs, outcome="ok", verb="cancel_orders")


async def test_cancel_rejected_already_gone_100005_while_orders_still_open(tmp_path):
    """The venue claims 100005 (not found) for every WS cancel, but the orders are still open:
    the daemon must not believe it; the snapshot shows them and it escalates (REST)."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("reject_cancels", code="100005")
                await trip(d)
                with trio.fail_after(8):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert d.engine.latch.tripped


async def test_cancel_of_orders_gone_behind_our_back_100005(tmp_path):
    """Orders vanish from the venue without a push: the cancels get a genuine 100005."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                acct = w.sim.accounts[w.key]
                for oid in list(acct.orders)[:10]:
                    del acct.orders[oid]  # silently gone (filled/cancelled elsewhere, push lost)
                await trip(d)
                with trio.fail_after(6):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert sum(r["n_gone"] for r in _results(recs)) >= 10


async def test_async_cancel_reject_100004_race(tmp_path):
    """Orders fill while the cancel is in flight: ack true, then an async CANCEL 100004."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("lose_race")
                await trip(d)
                with trio.fail_after(6):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert w.sim.accounts[w.key].counters.async_rejects_sent >= 1
    assert_trip_audit_complete(recs, OX_VENUE)


async def test_race_mode_unknown_order_100004(tmp_path):
    """The venue's 'race' reply for unknown ids: ack true, then async 100004 (never a success)."""
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("unknown_cancel_mode", mode="race")
                acct = w.sim.accounts[w.key]
                for oid in list(acct.orders)[:5]:
                    del acct.orders[oid]
                await trip(d)
                with trio.fail_after(6):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert acct.counters.async_rejects_sent >= 5
    assert_trip_audit_complete(recs, OX_VENUE)


async def test_rate_limited_20007_and_http_429(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("reject_cancels", code="20007")
                await w.sim.inject_fault("rest", mode="429", count=3)
                await trip(d)
                await wait_for(lambda: d.engine.counters.cancel_failures >= 1)
                await w.sim.inject_fault("reject_cancels", code=None)  # the limit window passes
                with trio.fail_after(10):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert _results(recs, outcome="rejected", code="20007") or _results(recs, outcome="rate_limited")


async def test_maintenance_000101(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("reject_cancels", code="000101")
                await w.sim.inject_fault("rest", mode="maintenance", count=4)
                await trip(d)
                await wait_for(lambda: d.engine.counters.cancel_failures >= 1)
                assert w.open_orders()  # nothing happened at the venue
                await w.sim.inject_fault("reject_cancels", code=None)  # maintenance ends
                with trio.fail_after(10):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    bad = [r for r in _results(recs) if r["outcome"] != "ok"]
    assert bad and all(r["outcome"] != "ok" for r in bad)


async def test_html_403_from_rest(tmp_path):
    """REST answers an HTML 403 page (firewall): verification snapshots fail as unknown,
    the daemon retries and only declares flat from a real snapshot."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("rest", mode="403", count=4)
                await trip(d)
                with trio.fail_after(10):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    vf = [r for r in recs if r["event"] == "verify_failed"]
    assert vf and any("403" in r["error"] for r in vf), vf
    assert w.sim.faults.rest_remaining == 0


async def test_venue_slow_acks_after_5s(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("ack_delay", seconds=5)
                t0 = trio.current_time()
                await trip(d)
                with trio.fail_after(6):
                    await wait_for(lambda: _flat(w, d))
                elapsed = trio.current_time() - t0
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert _results(recs, outcome="unknown", code="timeout")
    assert elapsed < 5  # flat from the snapshot, not from the late acks


async def test_pongs_stop(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            # tickers slowed down so that pongs are the only traffic on an idle socket
            w, text = await _setup(nursery, tmp_path, sim_options={"ticker_interval_s": 3600.0},
                                   venue_kw={"ping_interval": "300ms", "pong_timeout": "300ms"})
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("stop_pong")
                await wait_for(lambda: d.venues[OX_VENUE].session.connections_made >= 2)  # dead socket noticed
                await trip(d)
                with trio.fail_after(8):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE, need_cancel=False)
    assert any(r["event"] == "venue_disconnected" for r in recs)


async def test_auth_rejected_on_reconnect_alarms_and_still_cancels_over_rest(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("refuse_logins", code="20000")
                await w.sim.drop_connections(w.key)
                await wait_for(lambda: f"auth:{OX_VENUE}" in d.engine.alarms)  # loud
                st = d.status()
                assert st["alarms"] and "credentials rejected" in st["alarms"][f"auth:{OX_VENUE}"]
                await trip(d)
                with trio.fail_after(8):  # the WS is refused; REST still works
                    await wait_for(lambda: _flat(w, d))
                await w.sim.inject_fault("clear")
                await wait_for(lambda: f"auth:{OX_VENUE}" not in d.engine.alarms)  # recovers
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
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
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                conns = [c for c in w.sim._conns.values() if c.account is not None]
                assert conns
                for frame in BAD_FRAMES:
                    for c in conns:
                        await w.sim._send(c, frame)
                await wait_for(lambda: d.engine.counters.bad_frames >= 7)
                assert d.engine.state.open_count(OX_VENUE) == N  # hostile frames did not touch the book
                assert d.venues[OX_VENUE].session.connections_made == 1  # still on the same socket
                await trip(d)
                with trio.fail_after(6):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)


async def _skew(tmp_path, offset_ms: int):
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env(), clock=Clock(wall_offset_ms=offset_ms)) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await trip(d)
                with trio.fail_after(5):
                    await wait_for(lambda: _flat(w, d))
                # signed REST keeps working under the skew (polls after the trip)
                await w.place(3, OX_MARKETS[0])
                await wait_for(lambda: d.engine.counters.sweeps >= 3)
                with trio.fail_after(5):
                    await wait_for(lambda: _flat(w, d))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert not alarm_records(recs)


async def test_clock_skew_plus_5s(tmp_path):
    await _skew(tmp_path, +5000)


async def test_clock_skew_minus_5s(tmp_path):
    await _skew(tmp_path, -5000)


async def test_venue_unreachable_alarms_loudly(tmp_path):
    """WS logins refused and REST in maintenance: nothing can be done or verified. The trip
    stays latched and the daemon alarms (status + audit); when the venue returns, it goes flat."""
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("refuse_logins", code="20000")
                await w.sim.inject_fault("rest", mode="maintenance", count=10**6)
                await w.sim.drop_connections(w.key)
                await trip(d)
                with trio.fail_after(10):
                    await wait_for(lambda: f"unverified:{OX_VENUE}" in d.engine.alarms)
                assert len(w.open_orders()) == N and not venue_flat(d, OX_VENUE)
                assert d.status()["alarms"]
                await w.sim.inject_fault("clear")
                with trio.fail_after(10):
                    await wait_for(lambda: _flat(w, d))
                await wait_for(lambda: f"unverified:{OX_VENUE}" not in d.engine.alarms)
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert any(r["key"] == f"unverified:{OX_VENUE}" for r in alarm_records(recs))


async def test_cancels_refused_forever_alarms(tmp_path):
    """Snapshots work but every cancel (WS and REST) is refused: the daemon must alarm."""
    with trio.fail_after(25):
        async with trio.open_nursery() as nursery:
            w, text = await _setup(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await w.sim.inject_fault("reject_cancels", code="000101")
                from killswitch.net.http import Response

                async def refuse(req, acct):
                    return Response.json({"success": False, "code": "000101", "message": "maintenance"}, 503)

                w.sim._r_cancel_all = refuse
                w.sim._r_cancel = refuse
                w.sim._register_routes()
                await trip(d)
                with trio.fail_after(10):
                    await wait_for(lambda: any(k.endswith(OX_VENUE) for k in d.engine.alarms))
                assert len(w.open_orders()) == N
                del w.sim._r_cancel_all, w.sim._r_cancel
                w.sim._register_routes()
                await w.sim.inject_fault("clear")
                with trio.fail_after(10):
                    await wait_for(lambda: _flat(w, d))
                await wait_for(lambda: not any(k.endswith(OX_VENUE) for k in d.engine.alarms))
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE)
    assert alarm_records(recs)


async def test_sigkill_mid_trip_then_restart(tmp_path):
    """Subprocess ``python -m killswitch run``; SIGKILL as the first cancel frame arrives."""
    from .harness import kill9_midtrip_then_restart

    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            w, _ = await _setup(nursery, tmp_path)
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
    _check_restart_audit(recs, OX_VENUE)


def _check_restart_audit(recs, venue):
    starts = [i for i, r in enumerate(recs) if r["event"] == "daemon_start"]
    assert len(starts) == 2
    first, second = recs[:starts[1]], recs[starts[1]:]
    assert second[0]["latch"] == "tripped"
    ev2 = [r["event"] for r in second]
    assert "startup_tripped" in ev2 and "flat" in ev2
    assert ev2.index("startup_tripped") < ev2.index("flat")
    # Records still in the audit flusher's batch at SIGKILL are lost (the latch file, written
    # to the page cache before the first cancel, is what survives); the restart's
    # startup_tripped record names the trip that was in flight.
    assert all(r["event"] != "flat" for r in first)
    st = next(r for r in second if r["event"] == "startup_tripped")
    # (full trip record, or, if killed before latch.json was written, the pre-opened trip intent)
    assert st["trips"] == [1] or "trip 1" in st.get("reason", ""), st
    assert any(r["event"] == "cancel_sent" and r.get("venue") == venue for r in second)
