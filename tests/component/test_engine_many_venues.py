"""A global trip over many venues, and bursts of events: engine + executor + audit, fake venues."""

import trio

from killswitch.engine.loop import DRAIN_MAX
from killswitch.model import OrderInfo, OrderOpened, TripCommand

from .fakes import NADO_LIKE, OX_LIKE, FakeSession
from .harness import running


async def test_global_trip_cancels_every_venue_and_audits_every_plan(tmp_path, autojump_clock):
    with trio.fail_after(60):
        sessions = []
        for i in range(30):
            s = FakeSession(f"v{i:02d}", OX_LIKE if i % 2 else NADO_LIKE)
            s.add("P1", 300)
            s.add("P2", 200)
            sessions.append(s)
        async with running(tmp_path, sessions) as h:
            await h.until(lambda: h.engine.state.open_count() == 30 * 500)
            await h.send.send(TripCommand(reason="global", source="test"))
            await h.until(lambda: h.engine.all_flat())
            recs = await h.audit_records()
        assert all(s.orders == {} for s in sessions)
        trip = next(r for r in recs if r["event"] == "trip")
        plans = [r for r in recs if r["event"] == "cancel_plan" and r["trip_id"] == trip["trip_id"]]
        sent = [r for r in recs if r["event"] == "cancel_sent" and r["trip_id"] == trip["trip_id"]]
        # Every attempt is audited: one plan per venue, and every request sent belongs to one.
        assert sorted(p["venue"] for p in plans) == sorted(s.name for s in sessions)
        assert len({p["job_id"] for p in plans}) == 30
        assert {r["job_id"] for r in sent} <= {p["job_id"] for p in plans}
        assert {r["venue"] for r in sent} == {s.name for s in sessions}
        # Bulk verbs (no 500-id lists) on both kinds of venue.
        assert {s.calls[0][0] for s in sessions} <= {"cancel_all_orders", "cancel_products"}
        # Ordering: every venue's first request is out before the trip's bookkeeping (trip
        # record, then the plans) is written, and the trip record comes before the plans.
        seq = {id(r): r["seq"] for r in recs}
        first_sent = {}
        for r in sent:
            first_sent.setdefault(r["venue"], r["seq"])
        assert max(first_sent.values()) < trip["seq"] < min(seq[id(p)] for p in plans)
        assert all(r["seq"] > trip["seq"] for r in recs if r["event"] == "flat")


async def test_a_burst_is_handled_in_order_across_drain_batches(tmp_path, autojump_clock):
    """More events than one drain batch, with a trip in the middle: nothing lost or reordered;
    orders seen after the trip are swept, the ones before it were in the trip's plan."""
    with trio.fail_after(60):
        ox = FakeSession("ox", OX_LIKE)
        async with running(tmp_path, [ox]) as h:
            jobs = []
            submit = h.executor.submit
            h.executor.submit = lambda job: (jobs.append(job), submit(job))[1]
            before = ox.add("A", DRAIN_MAX + 50)
            after = ox.add("A", 5)
            for o in before:
                h.send.send_nowait(OrderOpened(o, ts_recv_s=trio.current_time()))
            h.send.send_nowait(TripCommand(reason="burst", source="test"))
            for o in after:
                h.send.send_nowait(OrderOpened(o, ts_recv_s=trio.current_time()))
            await h.until(lambda: h.engine.latch.tripped and h.engine.all_flat() and not ox.orders)
            assert h.engine.counters.sweeps == 5
            assert h.engine.state.open_count("ox") == 0
            recs = await h.audit_records()
        kinds = [r["event"] for r in recs]
        assert kinds.count("trip") == 1
        # The trip was handled after every event queued before it (its plan knew all of them)
        # and before the 5 queued after it (those were counted as sweeps, never as trip orders).
        (trip_job,) = [j for j in jobs if j.purpose == "trip"]
        assert trip_job.plan.n_known_orders == len(before)
        (plan,) = [r for r in recs if r["event"] == "cancel_plan" and r["purpose"] == "trip"]
        assert plan["plan"].startswith("cancel_all_orders")


async def test_many_events_queued_at_once_all_land_in_the_book(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox", OX_LIKE)
        async with running(tmp_path, [ox]) as h:
            n = 3 * DRAIN_MAX + 7
            for i in range(n):
                h.send.send_nowait(OrderOpened(OrderInfo("ox", "A", f"o{i}"), ts_recv_s=trio.current_time()))
            await h.until(lambda: h.engine.state.open_count("ox") == n)
            assert list(h.engine.state.book("ox").orders) == [f"o{i}" for i in range(n)]
