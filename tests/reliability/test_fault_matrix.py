"""Fault matrix, the faults every venue has: one scenario, parametrised over the venues.

The real Daemon in-process against each simulator over 127.0.0.1 sockets; the oracle is the
simulator's own book. Venue-specific faults (their own error codes, frames and transports)
are in ``test_fault_matrix_oxfun.py`` and ``test_fault_matrix_vertex.py``.
"""

from __future__ import annotations

import pytest
import trio

from killswitch.clock import Clock

from .fault_venues import VENUES, fault_run
from .harness import alarm_records, assert_trip_audit_complete, wait_for


@pytest.fixture(params=sorted(VENUES))
def fv(request):
    return VENUES[request.param]


async def test_ack_never_arrives_is_an_unknown_outcome_never_a_success(fv, tmp_path):
    async with fault_run(fv, tmp_path) as run:
        await fv.drop_acks(run.w)
        await run.trip()
        await run.wait_flat(8)  # request timeout 1 s + verification snapshot
    assert_trip_audit_complete(run.recs, fv.venue)
    # a missing ack is an unknown outcome, never a success or a rejection
    unknown = run.results(outcome="unknown", **({"code": fv.lost_ack_code} if fv.lost_ack_code else {}))
    assert unknown, [r for r in run.recs if r["event"] == "cancel_result"]


async def test_acks_5s_late_flat_from_the_snapshot_not_the_acks(fv, tmp_path):
    async with fault_run(fv, tmp_path, deadline_s=20) as run:
        await fv.delay_acks(run.w, 5.0)
        t0 = trio.current_time()
        await run.trip()
        await run.wait_flat(8)
        elapsed = trio.current_time() - t0
    assert_trip_audit_complete(run.recs, fv.venue)
    assert run.results(outcome="unknown")
    assert elapsed < 5  # flat from the verification snapshot, not from the late acks
    print(f"{fv.name} slow acks: flat after {elapsed:.2f} s")


@pytest.mark.parametrize("offset_ms", [+5000, -5000])
async def test_host_clock_skewed_5s_cancels_and_sweeps_still_accepted(fv, tmp_path, offset_ms):
    async with fault_run(fv, tmp_path, clock=Clock(wall_offset_ms=offset_ms)) as run:
        await run.trip()
        await run.wait_flat(5)
        # signed requests keep working under the skew (sweeps after the trip)
        sent_before = run.d.engine.counters.cancel_requests
        await fv.place_more(run.w, 3)
        if fv.listing_may_beat_pushes:
            # The venue is listed so often that a listing can report the new orders before
            # their pushes arrive: they are then cancelled by a retry round, not a sweep.
            await wait_for(lambda: run.open_count() == 0 and run.d.engine.counters.cancel_requests > sent_before)
        else:
            await wait_for(lambda: run.d.engine.counters.sweeps >= 3)
        await run.wait_flat(5)
    assert_trip_audit_complete(run.recs, fv.venue)
    assert not alarm_records(run.recs)
    assert not run.results(code="2011") and not run.results(code="2012") and not run.results(code="20024")


async def test_cancels_refused_forever_alarms_then_goes_flat_when_the_venue_accepts(fv, tmp_path):
    """Snapshots work but every cancel is refused (maintenance that never ends): the daemon
    keeps retrying with fresh nonces and must alarm, not stay silent."""
    async with fault_run(fv, tmp_path, deadline_s=25) as run:
        await fv.refuse_cancels_forever(run.w)
        await run.trip()
        with trio.fail_after(10):
            await wait_for(lambda: any(k.endswith(fv.venue) for k in run.d.engine.alarms))
        assert run.open_count() == fv.n
        await fv.allow_cancels(run.w)
        await run.wait_flat(10)
        await wait_for(lambda: not any(k.endswith(fv.venue) for k in run.d.engine.alarms))
    assert_trip_audit_complete(run.recs, fv.venue)
    assert alarm_records(run.recs)
