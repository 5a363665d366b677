"""Issue #13 item 1: cancels keep working when the host clock is wrong or steps.

The real Daemon in-process against the simulators over loopback; the daemon's wall clock is
the injected one (``Clock.wall_offset_ms``), the simulators keep true time. Each run boots
with a skew, trips, is flat; then the daemon's clock steps (-35 s, +75 s, +35 s, -75 s) and
each step is followed by a fresh trip that must also go flat, with no cancel refused for its
timestamp (Nado 2011/2012, OX.FUN 20024) and the skew reported as a ``clock_skew`` alarm.
"""

from __future__ import annotations

import pytest
import trio

from killswitch.clock import Clock
from killswitch.model import ResetCommand
from tests.reliability.harness import (
    NADO_VENUE, OX_VENUE, audit_records, daemon_yaml, running_daemon, start_nado, start_ox, trip, venue_flat,
    wait_for,
)

STEPS_S = (-35, 75, 35, -75)
TIME_CODES = {"2011", "2012", "20024", "100015"}


async def _trip_until_flat(daemon, venue: str, place, n_open) -> None:
    await place()
    await wait_for(lambda: daemon.engine.state.book(venue).orders)
    await trip(daemon, "clock test")
    await wait_for(lambda: venue_flat(daemon, venue))
    assert n_open() == 0
    await daemon.send.send(ResetCommand(operator="tester", reason="next step", source="test"))
    await wait_for(lambda: not daemon.engine.latch.tripped)


async def _run(tmp_path, venue: str, boot_skew_s: int) -> None:
    clock = Clock(wall_offset_ms=boot_skew_s * 1000)
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            if venue == OX_VENUE:
                w = await start_ox(n)
                place = lambda: w.place(3)  # noqa: E731
                n_open = lambda: len(w.open_orders())  # noqa: E731
            else:
                w = await start_nado(n)

                async def place():
                    w.place(3)
                    w.place(1, trigger=True)
                n_open = w.open_count
            text = daemon_yaml(tmp_path, w.venue_yaml())
            async with running_daemon(tmp_path, text, w.env(), clock=clock) as d:
                await wait_for(lambda: d.engine.state.book(venue).connected)
                key = f"clock_skew:{venue}"
                await wait_for(lambda: key in d.engine.alarms)
                assert f"{abs(boot_skew_s)}." in d.engine.alarms[key]  # names the offset in seconds
                await _trip_until_flat(d, venue, place, n_open)
                for step_s in STEPS_S:
                    clock.wall_offset_ms = (boot_skew_s + step_s) * 1000
                    await _trip_until_flat(d, venue, place, n_open)
                recs = await audit_records(d)
            n.cancel_scope.cancel()
    refused = [r for r in recs if r["event"] == "cancel_result" and str(r.get("code")) in TIME_CODES]
    assert refused == []
    assert not [r for r in recs if r["event"] == "verify_failed"]
    assert sum(1 for r in recs if r["event"] == "flat") == 1 + len(STEPS_S)


@pytest.mark.parametrize("boot_skew_s", [-45, 45])
async def test_nado_cancels_succeed_with_boot_skew_and_after_wall_clock_steps(tmp_path, boot_skew_s):
    await _run(tmp_path, NADO_VENUE, boot_skew_s)


@pytest.mark.parametrize("boot_skew_s", [-45, 45])
async def test_oxfun_cancels_succeed_with_boot_skew_and_after_wall_clock_steps(tmp_path, boot_skew_s):
    await _run(tmp_path, OX_VENUE, boot_skew_s)
