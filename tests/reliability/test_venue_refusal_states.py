"""Issue #13 items 2, 5 and 6 over loopback against the simulators.

* Item 2: a later round is planned from the venue's own verification snapshot, each plane on
  its own service: trigger orders the feed never showed cost the wallet nothing, and the trip
  spends exactly the cheapest complete plan's weight (no all-products escalation).
* Item 5: maintenance and a query-only IP are their own alarms (``venue_maintenance``,
  ``venue_query_only``), retried on their own schedule, and never count as refused cancels
  towards the unflat alarm.
* Item 6: an alarm whose message carries a changing count is one alarm while it lasts: logged
  once, its count and first/last seen updated in status and metrics.
"""

from __future__ import annotations

import trio

import killswitch.engine.loop as engine_loop
from killswitch.metrics import make_registry, render
from tests.reliability.harness import (
    NADO_PRODUCTS, NADO_VENUE, OX_VENUE, audit_records, daemon_yaml, running_daemon, start_nado, start_ox, trip,
    venue_flat, wait_for,
)
from tests.unit.test_metrics import samples


def _wallet_used(w) -> int:
    """Weight the venue counted on the wallet over the last minute."""
    return w.sim.core.budget(w.sender.lower()[:42]).used(60, w.sim.clock.monotonic_s())


def _alarms(recs, prefix: str) -> list[dict]:
    return [r for r in recs if r["event"] == "alarm" and r["key"].startswith(prefix)]


async def test_nado_later_round_planned_from_snapshot_trigger_plane_on_its_own_service(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            w = await start_nado(n)
            text = daemon_yaml(tmp_path, w.venue_yaml())
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.book(NADO_VENUE).connected)
                w.place(10, NADO_PRODUCTS[0])
                await wait_for(lambda: len(d.engine.state.book(NADO_VENUE).orders) == 10)
                placed = []

                def on_execute(t, request_type):
                    # Trigger orders the strategy places as the trip starts: no stream shows
                    # them, only the verification snapshot does.
                    if not placed and request_type.startswith("execute_cancel"):
                        placed.append(w.place(2, NADO_PRODUCTS[1], trigger=True))

                w.sim.on_execute = on_execute
                used0 = _wallet_used(w)
                await trip(d)
                await wait_for(lambda: venue_flat(d, NADO_VENUE) and w.open_count() == 0)
                spent = _wallet_used(w) - used0
                recs = await audit_records(d)
            n.cancel_scope.cancel()
    plans = [r["plan"] for r in recs if r["event"] == "cancel_plan"]
    assert len(plans) == 2, plans
    # Round 1: per product for product 2 (weight 5, the cheapest complete plan); round 2 from
    # the snapshot: the two trigger survivors by id on the trigger service (wallet weight 0).
    assert plans[0].startswith("cancel_products(2)"), plans
    assert "trigger plane only" in plans[1] and "cancel_all" not in plans[1], plans
    assert spent == 5, spent


async def test_nado_maintenance_is_its_own_alarm_retried_on_its_schedule_never_unflat(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_loop, "VENUE_STATE_RETRY_S", {"maintenance": (0.05, 0.2), "query_only": (0.05, 0.2)},
                        raising=False)
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            w = await start_nado(n)
            text = daemon_yaml(tmp_path, w.venue_yaml())
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.book(NADO_VENUE).connected)
                w.place(4, NADO_PRODUCTS[0])
                await wait_for(lambda: len(d.engine.state.book(NADO_VENUE).orders) == 4)
                refusals = engine_loop.UNFLAT_ALARM_AFTER_ROUNDS + 3
                w.sim.set_faults(maintenance_code=1004, maintenance_count=refusals)
                await trip(d)
                await wait_for(lambda: venue_flat(d, NADO_VENUE) and w.open_count() == 0)
                recs = await audit_records(d)
            n.cancel_scope.cancel()
    maint = [r for r in recs if r["event"] == "cancel_result" and r.get("code") == "1004"]
    assert len(maint) >= refusals - 1  # every round refused, more rounds than the unflat threshold
    assert len(_alarms(recs, f"venue_maintenance:{NADO_VENUE}")) == 1
    assert _alarms(recs, "unflat:") == []
    assert any(r["event"] == "alarm_cleared" and r["key"] == f"venue_maintenance:{NADO_VENUE}" for r in recs)


async def test_nado_query_only_ip_is_its_own_alarm_and_cancels_resume_when_lifted(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_loop, "VENUE_STATE_RETRY_S", {"maintenance": (0.05, 0.2), "query_only": (0.05, 0.2)},
                        raising=False)
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            w = await start_nado(n)
            w.place(3, NADO_PRODUCTS[0])
            w.sim.set_faults(query_only=True)
            text = daemon_yaml(tmp_path, w.venue_yaml())
            async with running_daemon(tmp_path, text, w.env()) as d:
                key = f"venue_query_only:{NADO_VENUE}"
                await wait_for(lambda: key in d.engine.alarms)  # GET /ip at start, before any cancel
                await trip(d)
                await wait_for(lambda: d.engine.counters.cancel_requests >= 8)  # several refused rounds
                assert w.open_count() == 3 and not venue_flat(d, NADO_VENUE)
                w.sim.set_faults(query_only=False)
                await wait_for(lambda: venue_flat(d, NADO_VENUE) and w.open_count() == 0)
                status = d.engine.status()
                recs = await audit_records(d)
            n.cancel_scope.cancel()
    assert key not in status["alarms"]
    assert _alarms(recs, "unflat:") == []
    assert any(r["event"] == "cancel_result" and r.get("code") == "ip_query_only" for r in recs)


async def test_oxfun_maintenance_refusals_are_their_own_alarm_never_unflat(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_loop, "VENUE_STATE_RETRY_S", {"maintenance": (0.05, 0.2), "query_only": (0.05, 0.2)},
                        raising=False)
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            w = await start_ox(n)
            text = daemon_yaml(tmp_path, w.venue_yaml())
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.book(OX_VENUE).connected)
                await w.place(3)
                await wait_for(lambda: len(d.engine.state.book(OX_VENUE).orders) == 3)
                await w.sim.inject_fault("reject_cancels", code="000101")  # WS cancels: "unavailable"
                await w.sim.inject_fault("rest", mode="maintenance", count=2)
                await trip(d)
                await wait_for(lambda: f"venue_maintenance:{OX_VENUE}" in d.engine.alarms)
                await w.sim.inject_fault("reject_cancels", code=None)
                await wait_for(lambda: venue_flat(d, OX_VENUE) and not w.open_orders())
                status = d.engine.status()
                recs = await audit_records(d)
            n.cancel_scope.cancel()
    assert _alarms(recs, "unflat:") == []
    assert any(r["event"] == "cancel_result" and r.get("venue_state") == "maintenance" for r in recs)
    assert f"venue_maintenance:{OX_VENUE}" not in status["alarms"]


async def test_oxfun_repeating_alarm_is_one_alarm_with_count_and_first_last_seen(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            w = await start_ox(n)
            text = daemon_yaml(tmp_path, w.venue_yaml(), repoll="100ms")
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.book(OX_VENUE).connected)
                await w.place(2)
                await wait_for(lambda: len(d.engine.state.book(OX_VENUE).orders) == 2)
                # Every REST read fails: verification cannot confirm, over and over; the
                # alarm's message carries the growing failure count.
                await w.sim.inject_fault("rest", mode="maintenance", count=10**6)
                await trip(d)
                key = f"unverified:{OX_VENUE}"
                await wait_for(lambda: key in d.engine.alarms and d.engine.state.book(OX_VENUE).connected)
                await d.audit.flush()
                audit_path = d.config.daemon.audit_log
                n_failed = lambda: sum(1 for line in open(audit_path) if '"verify_failed"' in line)  # noqa: E731
                n0 = n_failed()
                while n_failed() < n0 + 8:
                    await trio.sleep(0.02)
                    await d.audit.flush()
                status = d.engine.status()
                metrics = samples(render(make_registry(d)).decode())
                recs = await audit_records(d)
                await w.sim.inject_fault("rest", mode="maintenance", count=0)
            n.cancel_scope.cancel()
    logged = [r for r in recs if r["event"] == "alarm" and r["key"] == key]
    assert len(logged) == 1, [r["message"] for r in logged]
    detail = status["alarm_details"][key]
    assert detail["count"] >= 8 and detail["last_seen_wall_ms"] > detail["first_seen_wall_ms"]
    assert "failures" in status["alarms"][key]
    labels = (("alarm", key), ("kind", "unverified"), ("venue", OX_VENUE))
    assert metrics[("killswitch_alarm_active", labels)] == 1
    assert metrics[("killswitch_alarm_count", labels)] >= 8
    assert metrics[("killswitch_alarm_last_seen_seconds", labels)] >= \
        metrics[("killswitch_alarm_first_seen_seconds", labels)]
