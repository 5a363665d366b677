"""Issue #13 item 3: a rate-limit refusal holds the daemon back, and a restart remembers.

Nado's wallet budget (100 weight / 10 s, shared with the strategy) over loopback:

* the black-box sequence trip -> kill -9 -> restart -> sweep, with the strategy having spent
  most of the window, draws no 1000 at all (the restarted daemon counts the weight spent
  before the crash, persisted in state_dir);
* with the window spent by the strategy, a refusal blocks the budget for the venue's 10 s
  window: one probe per window, not a cancel every retry.
"""

from __future__ import annotations

import signal

import trio

from killswitch.model import ResetCommand
from tests.e2e.helpers import DaemonProcess, child_env
from tests.reliability.harness import (
    NADO_PRODUCTS, NADO_VENUE, audit_lines_lenient, audit_records, daemon_yaml, running_daemon, start_nado, trip,
    venue_flat, wait_for,
)


def _count_refusals(sim) -> list[float]:
    """Wrap the sim's engine: every execute answered with 1000, stamped (trio time)."""
    refusals: list[float] = []
    core_execute = sim.core.execute

    def execute(body, **kw):
        resp, pushes = core_execute(body, **kw)
        if resp.get("error_code") == 1000:
            refusals.append(trio.current_time())
        return resp, pushes

    sim.core.execute = execute
    return refusals


def _count_trigger_queries(sim) -> list[float]:
    seen: list[float] = []
    core_query = sim.core.trigger_query

    def trigger_query(body, **kw):
        seen.append(trio.current_time())
        return core_query(body, **kw)

    sim.core.trigger_query = trigger_query
    return seen


def _flats(path) -> int:
    return sum(1 for r in audit_lines_lenient(path) if r["event"] == "flat")


async def test_nado_trip_kill9_restart_sweep_draws_no_rate_limit_refusal(tmp_path):
    with trio.fail_after(40):
        async with trio.open_nursery() as n:
            w = await start_nado(n)
            refusals = _count_refusals(w.sim)
            trigger_queries = _count_trigger_queries(w.sim)
            w.place(120, NADO_PRODUCTS[0])
            w.place(3, NADO_PRODUCTS[1], trigger=True)
            cfg = tmp_path / "killswitch.yaml"
            cfg.write_text(daemon_yaml(tmp_path, w.venue_yaml()))
            audit = tmp_path / "state" / "audit.jsonl"
            env = child_env(tmp_path, **w.env())
            proc = DaemonProcess(cfg, env, tmp_path / "daemon.log").start()
            try:
                await wait_for(lambda: any(r["event"] == "ready" for r in audit_lines_lenient(audit)), step_s=0.02)
                w.sim.burn_weight(w.sender, 45)  # the strategy, on the same wallet
                proc.signal(signal.SIGUSR1)
                await wait_for(lambda: _flats(audit) == 1 and w.open_count() == 0, step_s=0.02)
                proc.signal(signal.SIGKILL)
                assert await proc.wait_exit(5) == -signal.SIGKILL
            finally:
                proc.kill()
            proc = DaemonProcess(cfg, env, tmp_path / "daemon.log").start()
            try:
                await wait_for(lambda: sum(1 for r in audit_lines_lenient(audit) if r["event"] == "ready") == 2,
                               step_s=0.02)
                await wait_for(lambda: _flats(audit) >= 2, step_s=0.02)
                # A verification poll fails once while the venue is already confirmed flat.
                w.sim.set_faults(trigger_query_fail_count=1)
                await wait_for(lambda: any(r["event"] == "verify_failed" for r in audit_lines_lenient(audit)),
                               step_s=0.02)
                # ... and the daemon has verified twice since (a retry it scheduled is due by then).
                n_queries = len(trigger_queries)
                await wait_for(lambda: len(trigger_queries) >= n_queries + 2, step_s=0.02)
                w.place(3, NADO_PRODUCTS[0])  # the runaway strategy: swept by the restarted daemon
                await wait_for(lambda: w.open_count() == 0, step_s=0.02)
                await wait_for(lambda: _flats(audit) >= 3, step_s=0.02)
                recs = audit_lines_lenient(audit)
            finally:
                proc.kill()
            n.cancel_scope.cancel()
    assert refusals == [], (len(refusals), [r for r in recs if r["event"] in ("cancel_plan", "cancel_result")])
    assert not [r for r in recs if r["event"] == "cancel_result" and r.get("outcome") == "rate_limited"
                and r.get("code") == "1000"]


async def test_nado_rate_limit_refusal_blocks_the_budget_for_the_venue_window(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            w = await start_nado(n)
            refusals = _count_refusals(w.sim)
            text = daemon_yaml(tmp_path, w.venue_yaml(), cancel_deadline="3s")
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.book(NADO_VENUE).connected)
                w.place(120, NADO_PRODUCTS[0])
                w.place(120, NADO_PRODUCTS[1])
                await wait_for(lambda: len(d.engine.state.book(NADO_VENUE).orders) == 240)
                w.sim.burn_weight(w.sender, 100)  # the strategy spent the whole 10 s window
                t0 = trio.current_time()
                await trip(d)
                await wait_for(lambda: venue_flat(d, NADO_VENUE))
                t_flat = trio.current_time() - t0
                status = d.engine.status()
                recs = await audit_records(d)
                await d.send.send(ResetCommand(operator="t", reason="done", source="test"))
            n.cancel_scope.cancel()
    # The first cancel is refused (the window is spent); the next request goes only after the
    # venue's 10 s window, never within it.
    assert refusals, "the burn should make the first cancel draw a 1000"
    gaps = [b - a for a, b in zip(refusals, refusals[1:])]
    assert all(g >= 9.5 for g in gaps), gaps
    assert t_flat >= 9.5
    held = [r for r in recs if r["event"] == "cancel_result" and r.get("code") == "held"]
    assert len(refusals) <= 2 and len(held) <= 3, (refusals, len(held))
    assert "rate_limited:" + NADO_VENUE not in status["alarms"]  # cleared once flat


async def test_restarted_nado_session_counts_the_weight_spent_before_the_crash(tmp_path):
    from killswitch.clock import Clock
    from killswitch.secrets import Secret
    from killswitch.venues.vertex.session import VertexSession
    from tests.integration.vertex_fixtures import EventLog, SentLog, make_config, sim_and_session

    with trio.fail_after(15):
        async with sim_and_session(start_session=False) as (sim, acct, _, _log):
            async def session_run(nursery) -> VertexSession:
                s = VertexSession(make_config(sim), private_key=Secret(acct["private_key"]), clock=Clock(),
                                  state_dir=tmp_path)
                send, recv = trio.open_memory_channel(1000)
                nursery.start_soon(EventLog().drain, recv)
                await nursery.start(s.run, send)
                return s

            async with trio.open_nursery() as n:
                first = await session_run(n)
                res = await first.cancel_all_orders(include_triggers=False, trip_id=1, on_sent=SentLog())
                assert [r.outcome for r in res] == ["ok"]
                n.cancel_scope.cancel()  # the process dies: nothing but the spend file is left
            async with trio.open_nursery() as n:
                second = await session_run(n)
                assert second.budget_available(trio.current_time()) <= 100 - 50
                n.cancel_scope.cancel()
