"""Signals at any moment of start-up.

SIGUSR1 is a latched trip whenever it arrives: before the config is read, while the venues
connect, after READY. Every run must end TRIPPED (the latch on disk) with the simulator's own
book empty, and the process alive until told to stop. SIGHUP during start-up is deferred until
the daemon is up (then reloads); SIGTERM at any moment ends the process within 2 s, still
cancelling on the venues that are up when ``cancel_on_shutdown`` is set.

Offsets are measured from the moment the child's handlers are in place (``SigCgt`` in
``/proc/PID/status``), which ``killswitch run`` does before any other work; the interpreter's
own start-up before that is the one window no Python code can cover (see docs/reliability.md;
``bench/startup_signal_window.py`` measures it).
"""

from __future__ import annotations

import signal
import time

import pytest
import trio

from .harness import daemon_yaml, start_ox, wait_for
from .startup_proc import Run, wait_handlers_installed

STOP_BOUND_S = 2.0


async def _trip_at(root, ox, name: str, offset_s: float) -> None:
    await ox.place(3)
    assert ox.open_orders()
    run = Run(root, name, lambda d: daemon_yaml(d, ox.venue_yaml(), startup_timeout="5s"), ox.env())
    run.proc.start()
    try:
        t0 = await wait_handlers_installed(run.proc)
        # First action: the handlers are in place before the config is read (no state dir yet).
        assert not (run.dir / "state").exists(), "handlers installed only after start-up work"
        await trio.sleep_until(t0 + offset_s)
        run.proc.signal(signal.SIGUSR1)
        with trio.fail_after(20):
            await wait_for(lambda: run.proc.proc.poll() is not None or (not ox.open_orders() and run.latch_tripped()
                                                                       and "flat" in run.events()), step_s=0.02)
        assert run.proc.proc.poll() is None, f"SIGUSR1 at +{offset_s * 1e3:.0f} ms killed it:\n{run.log()}"
        assert run.latch_tripped() and not ox.open_orders()
        trips = [r for r in run.audit() if r["event"] == "trip"]
        assert trips and trips[0]["source"] == "signal", run.events()
        run.proc.signal(signal.SIGTERM)
        assert await run.proc.wait_exit(10) == 0, run.log()
        assert run.latch_tripped()  # what the next start sees
    finally:
        run.proc.kill()


async def test_sigusr1_at_every_50ms_of_startup_is_a_latched_trip_and_the_book_ends_flat(tmp_path):
    """21 daemons one after the other (two at once only compete for the same 2 cores)."""
    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            for ms in range(0, 1001, 50):
                await _trip_at(tmp_path, ox, f"at{ms}", ms / 1000)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("offset_ms", [0, 5, 20])
async def test_sighup_during_startup_is_deferred_until_up_then_reloads(tmp_path, offset_ms):
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            run = Run(tmp_path, "hup", lambda d: daemon_yaml(d, ox.venue_yaml()), ox.env())
            run.proc.start()
            try:
                t0 = await wait_handlers_installed(run.proc)
                await trio.sleep_until(t0 + offset_ms / 1000)
                run.proc.signal(signal.SIGHUP)
                await wait_for(lambda: run.proc.proc.poll() is not None or "reload_ok" in run.events(), step_s=0.02)
                assert run.proc.proc.poll() is None, f"SIGHUP killed it:\n{run.log()}"
                ev = run.events()
                assert ev.index("ready") < ev.index("reload_ok"), ev
                assert not run.latch_tripped()
                run.proc.signal(signal.SIGTERM)
                assert await run.proc.wait_exit(10) == 0, run.log()
            finally:
                run.proc.kill()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("offset_ms", [0, 30, 150, 400])
async def test_sigterm_early_in_startup_exits_within_2s(tmp_path, offset_ms):
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            run = Run(tmp_path, "term", lambda d: daemon_yaml(d, ox.venue_yaml()), ox.env())
            run.proc.start()
            try:
                t0 = await wait_handlers_installed(run.proc)
                assert not (run.dir / "state").exists(), "handlers installed only after start-up work"
                await trio.sleep_until(t0 + offset_ms / 1000)
                sent = time.monotonic()
                run.proc.signal(signal.SIGTERM)
                code = await run.proc.wait_exit(10)
                took_s = time.monotonic() - sent
                assert code == 0, run.log()
                assert took_s < STOP_BOUND_S, f"exit {took_s:.2f} s after SIGTERM"
            finally:
                run.proc.kill()
            nursery.cancel_scope.cancel()


async def test_sigterm_while_a_venue_is_down_exits_within_2s_and_cancels_on_the_venue_that_is_up(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            down = await start_ox(nursery)
            down_yaml = down.venue_yaml(name="ox-down").replace(
                f"{down.sim.rest_url}", "http://127.0.0.1:9").replace(f"{down.sim.ws_url}", "ws://127.0.0.1:9/v2/websocket")
            down.env_prefix = "RL_OX"  # same credentials variables

            def text(d):
                t = daemon_yaml(d, ox.venue_yaml() + down_yaml, startup_timeout="30s")
                return t.replace("  log_format: json\n", "  log_format: json\n  cancel_on_shutdown: true\n")

            await ox.place(4)
            run = Run(tmp_path, "down", text, ox.env())
            run.proc.start()
            try:
                await wait_for(lambda: any(r["event"] == "venue_connected" and r.get("venue") == "ox-main"
                                           for r in run.audit()), step_s=0.02)
                assert "ready" not in run.events()  # still starting: ox-down never comes up
                sent = time.monotonic()
                run.proc.signal(signal.SIGTERM)
                code = await run.proc.wait_exit(10)
                took_s = time.monotonic() - sent
                assert code == 0, run.log()
                assert took_s < STOP_BOUND_S, f"exit {took_s:.2f} s after SIGTERM:\n{run.log()}"
                assert not ox.open_orders(), "cancel_on_shutdown not honoured for the venue that was up"
            finally:
                run.proc.kill()
            nursery.cancel_scope.cancel()
