"""Fault matrix, Vertex/Nado (Nado flavour): the real Daemon in-process against VertexSim over
127.0.0.1 sockets (gateway WS, subscription WS with permessage-deflate, REST, trigger service).

Oracle: the sim's own books (resting + trigger orders). Request timeout 1 s.
"""

from __future__ import annotations

import orjson
import trio

from killswitch.clock import Clock
from killswitch.venues.vertex.sim.core import ExecError

from .fault_venues import VENUES, fault_run
from .harness import (
    NADO_PRODUCTS,
    NADO_VENUE,
    alarm_records,
    assert_trip_audit_complete,
    audit_records,
    check_restart_audit,
    daemon_yaml,
    kill9_midtrip_then_restart,
    running_daemon,
    trip,
    venue_flat,
    wait_for,
)

NADO = VENUES["nado"]
N = NADO.n


def _results(recs, **match):
    return [r for r in recs if r["event"] == "cancel_result" and all(r.get(k) == v for k, v in match.items())]


async def _ready(w, d, n=N):
    await wait_for(lambda: d.engine.state.open_count(NADO_VENUE) == n)


async def test_socket_dropped_mid_cancel_1006(tmp_path):
    async with fault_run(NADO, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        before = len(w.sim.execute_log)
        w.sim.set_faults(delay_s=0.5, delay_count=10)  # hold the cancels (gateway and trigger) on the venue side
        await trip(d)
        await wait_for(lambda: len(w.sim.execute_log) > before)
        await w.sim.drop_connections("all")  # mid-cancel: no close frame
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    assert _results(recs, outcome="unknown")
    assert any(r["event"] == "venue_disconnected" for r in recs)


async def test_cancel_rejected_already_gone_2020(tmp_path):
    """Orders vanish without a push; a sweep by digest hits a genuine 2020 naming them."""
    async with fault_run(NADO, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        await trip(d)
        await wait_for(run.flat)
        # runaway strategy after the trip; some of its orders disappear silently
        w.sim.set_faults(delay_s=0.3, delay_count=1)  # hold the next execute (the sweep)
        new = w.place(6, NADO_PRODUCTS[0])
        sub = w.sim.core.subaccount(w.sender)
        await wait_for(lambda: len(d.engine.progress[NADO_VENUE].pending_sweep) > 0
                       or d.engine.counters.sweeps >= 6)
        for dg in new[:3]:
            sub.orders.pop(dg, None)
        with trio.fail_after(8):
            await wait_for(lambda: d.engine.counters.sweeps >= 6 and run.flat())
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)


async def test_cancel_rejected_2020_injected_while_orders_open(tmp_path):
    """The venue says 2020 but the orders are still there: never believed, re-cancelled."""
    async with fault_run(NADO, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        w.sim.set_faults(reject_code=2020, reject_count=3)
        await trip(d)
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    assert _results(recs, code="2020")


async def test_cancel_after_recv_time_2011(tmp_path):
    """A genuine 2011: recv_window 1 s, the venue holds the first cancel for 1.3 s."""
    async with fault_run(NADO, tmp_path, deadline_s=15, venue_kw={"request_timeout": "3s", "recv_window": "1s",
                                                                     "ping_interval": "5s"}) as run:
        w, d = run.w, run.d
        w.sim.set_faults(delay_s=1.3, delay_count=1)
        await trip(d)
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    assert _results(recs, code="2011"), [r for r in recs if r["event"] == "cancel_result"]


async def test_cancel_too_early_2012_clock_skew_then_fixed(tmp_path):
    """A genuine 2012: the venue's clock runs 5 s behind and recv_window is 98 s, so recv_time
    lands more than 100 s ahead of the venue. Every attempt is rejected (never success); when the
    venue's clock is fixed, a fresh attempt succeeds."""
    sim_clock = Clock()
    async with fault_run(NADO, tmp_path, deadline_s=20, sim_clock=sim_clock, venue_kw={"recv_window": "98s"}) as run:
        w, d = run.w, run.d
        sim_clock.wall_offset_ms = -5000
        await trip(d)
        await wait_for(lambda: d.engine.counters.cancel_failures >= 2)
        assert w.open_count() == N
        sim_clock.wall_offset_ms = 0
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    assert _results(recs, code="2012")


async def test_rate_limited_1000(tmp_path):
    async with fault_run(NADO, tmp_path, deadline_s=25) as run:
        w, d = run.w, run.d
        w.sim.set_faults(reject_code=1000, reject_count=2)
        t0 = trio.current_time()
        await trip(d)
        await run.wait_flat(15)  # the session backs off the wallet budget for 10 s at most
        elapsed = trio.current_time() - t0
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    assert _results(recs, outcome="rate_limited")
    print(f"nado 1000: flat after {elapsed:.2f} s")


async def _maintenance(tmp_path, code: int):
    async with fault_run(NADO, tmp_path, deadline_s=15) as run:
        w, d = run.w, run.d
        w.sim.set_faults(maintenance_code=code, maintenance_count=3)
        await trip(d)
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    m = _results(recs, code=str(code))
    assert m and all(r["outcome"] == "unknown" for r in m), m


async def test_maintenance_1004(tmp_path):
    await _maintenance(tmp_path, 1004)


async def test_maintenance_2068(tmp_path):
    await _maintenance(tmp_path, 2068)


async def test_pongs_stop(tmp_path):
    async with fault_run(NADO, tmp_path, deadline_s=20, venue_kw={"ping_interval": "300ms"}) as run:
        w, d = run.w, run.d
        w.sim.set_faults(ignore_pings=True)
        await wait_for(lambda: not d.engine.state.is_connected(NADO_VENUE))  # dead socket noticed
        await trip(d)
        w.sim.set_faults(ignore_pings=False)
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE, need_cancel=False)
    assert any(r["event"] == "venue_disconnected" for r in recs)


async def test_auth_rejected_on_reconnect_alarms_and_still_cancels(tmp_path):
    async with fault_run(NADO, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        real_auth = w.sim.core.authenticate

        def refuse(msg, now_ms):
            raise ExecError(2028, "invalid signer")

        w.sim.core.authenticate = refuse
        await w.sim.drop_connections("subscribe")
        await wait_for(lambda: f"auth:{NADO_VENUE}" in d.engine.alarms)
        assert "credentials rejected" in d.status()["alarms"][f"auth:{NADO_VENUE}"]
        await trip(d)
        await run.wait_flat(8)  # executes are signed per request: still accepted
        w.sim.core.authenticate = real_auth
        await wait_for(lambda: f"auth:{NADO_VENUE}" not in d.engine.alarms)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)
    assert any(r["key"] == f"auth:{NADO_VENUE}" for r in alarm_records(recs))


BAD_FRAMES = [
    b"{not json",
    b'{"type": "order_update", "digest": "0x12',
    orjson.dumps({"type": "order_update", "timestamp": "1", "product_id": 2, "digest": "0x" + "ab" * 5000,
                  "amount": "1", "reason": "placed"}),
    b'{"type": "weather"}',
    b"[1,2,3]",
    orjson.dumps({"type": "order_update", "timestamp": "1", "product_id": "2; DROP TABLE", "digest": "0xzz",
                  "amount": "x", "reason": "placed"}),
    orjson.dumps({"type": "fill", "product_id": -1}),
    "\x00\u00ff garbage \ufffd".encode(),
]


async def test_malformed_truncated_oversized_unknown_frames(tmp_path):
    async with fault_run(NADO, tmp_path, deadline_s=20) as run:
        w, d = run.w, run.d
        conns = [c for c in w.sim._sub_conns if c.wallet]
        assert conns
        for frame in BAD_FRAMES:
            for c in conns:
                c.send.send_nowait((frame, "garbage"))
        await wait_for(lambda: d.engine.counters.bad_frames >= 5)
        assert d.engine.state.open_count(NADO_VENUE) == N
        await trip(d)
        await run.wait_flat(8)
    recs = run.recs
    assert_trip_audit_complete(recs, NADO_VENUE)


async def test_venue_unreachable_alarms_loudly(tmp_path):
    """The whole venue goes away (listeners closed): the trip stays latched, the daemon keeps
    retrying and raises an ``unverified`` alarm (status + audit) instead of claiming flat."""
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sim_scope = trio.CancelScope()

            class _Scoped:  # the sim's tasks live under a scope the test can cancel alone
                async def start(self, fn, *a):
                    async def run(task_status=trio.TASK_STATUS_IGNORED):
                        with sim_scope:
                            await fn(*a, task_status=task_status)
                    return await nursery.start(run)

            w = await NADO.start(_Scoped(), sim_clock=None, sim_kw={})
            await NADO.place_book(w)
            text = daemon_yaml(tmp_path, w.venue_yaml())
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(NADO_VENUE) == N)
                sim_scope.cancel()  # the venue disappears: listeners closed, sockets gone
                await wait_for(lambda: not d.engine.state.is_connected(NADO_VENUE))
                await trip(d)
                with trio.fail_after(10):
                    await wait_for(lambda: f"unverified:{NADO_VENUE}" in d.engine.alarms)
                st = d.status()
                assert st["state"] == "tripped" and st["alarms"]
                assert not venue_flat(d, NADO_VENUE)
                recs = await audit_records(d)
            nursery.cancel_scope.cancel()
    assert w.open_count() == N  # nothing was cancelled, and nothing claims otherwise
    assert "trip" in [r["event"] for r in recs]
    assert any(r["key"] == f"unverified:{NADO_VENUE}" for r in alarm_records(recs))
    assert not [r for r in recs if r["event"] == "flat"]


async def test_sigkill_mid_trip_then_restart(tmp_path):
    """Subprocess ``python -m killswitch run``; SIGKILL as the first cancel execute arrives."""
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            w = await NADO.start(nursery, sim_clock=None, sim_kw={})
            await NADO.place_book(w)
            base = []

            def hold():
                base.append(len(w.sim.execute_log))
                w.sim.set_faults(maintenance_code=1004, maintenance_count=10**6)

            async def more():
                w.place(5, NADO_PRODUCTS[1], side="sell")

            recs = await kill9_midtrip_then_restart(
                tmp_path, venue_yaml=w.venue_yaml(), env=w.env(), venue=NADO_VENUE, open_count=w.open_count,
                hold_cancels=hold, release_cancels=lambda: w.sim.set_faults(maintenance_count=0),
                cancel_seen=lambda: len(w.sim.execute_log) > base[0], place_more=more)
            nursery.cancel_scope.cancel()
    check_restart_audit(recs, NADO_VENUE)
