"""`killswitch demo`: the real daemon against the built-in simulated exchanges, in under a
minute, with no credentials and no network beyond 127.0.0.1.

A scripted strategy trades on a simulated OX.FUN, Nado and Hyperliquid account while the
daemon watches them, in four acts, each ending with a latched trip, the daemon cancelling
everything and the simulators' own books showing zero open orders:

1. the strategy loses money (marks / oracle prices fall) until the drawdown rule trips;
2. the strategy goes silent (its heartbeat stops) until the stale-heartbeat rule trips;
3. the strategy runs away (floods orders) until the order-rate rule trips; orders it keeps
   sending after the trip are swept;
4. the strategy runs away on Hyperliquid alone (after resting a stop trigger there) until
   the order-rate rule trips on that venue; resting and trigger orders are cancelled.

Before the acts the demo waits for the Hyperliquid venue's own dead-man's switch
(scheduleCancel, `dms_after`) to be armed and shows when it would fire.

Between acts the latch is reset through the engine's audited ResetCommand (operator "demo").
Exit status 0 only if every act ended flat by the simulators' own open-order lists.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Awaitable, Callable

import orjson
import trio

from killswitch.audit import read_audit
from killswitch.daemon import Daemon
from killswitch.demo.report import PeakTracker, Printer, TripFigures, figures_from_audit, progress_line, trip_block
from killswitch.demo.world import (
    HL_COIN,
    HL_MARK,
    HL_VENUE,
    NADO_ENTRY_PRICE,
    NADO_PRODUCT,
    OX_ENTRY_PRICE,
    OX_MARKET,
    DemoAccounts,
    DemoPaths,
    DemoSims,
    create_accounts,
    sim_backstop_ms,
    sim_open_orders,
    start_sims,
    write_config,
)
from killswitch.logs import SecretRedactor, configure_logging
from killswitch.model import HeartbeatReceived, ResetCommand

STRATEGY = "demo-strategy"  # heartbeat source named in the demo rules
HEARTBEAT_INTERVAL_S = 0.3
PROGRESS_INTERVAL_S = 0.25
POLL_S = 0.02
ACT_TIMEOUT_S = 20.0
FLAT_TIMEOUT_S = 15.0
LOSS_STEP_S = 0.2
OX_MARK_STEP = Decimal("250")  # 0.25% of the OX account's equity per step
NADO_ORACLE_STEP = Decimal("5")  # 0.25% of the Nado account's equity per step
FLOOD_INTERVAL_S = 0.025
FLOOD_AFTER_TRIP_S = 0.4  # a runaway does not notice the trip at once: show the sweep
BOOK_LEVELS = 3  # bids and asks per venue, well away from the marks so nothing fills
TOTAL_TIMEOUT_S = 90.0
BACKSTOP_TIMEOUT_S = 10.0
HL_QTY = "0.01"  # ETH: about $27 a quote, over the venue's $10 minimum
HL_STOP_PX = HL_MARK * Decimal("0.8")  # a resting stop-loss trigger, far from the mark


@dataclass(frozen=True, slots=True)
class Act:
    name: str
    title: str
    focus_rules: tuple[str, ...]
    expected_rule: str
    expected_venue: str | None = None  # the venue the trip must name (its observed text)


ACTS = (
    Act("drawdown", "Act 1 - the strategy starts losing money", ("demo-drawdown",), "demo-drawdown"),
    Act("silent", "Act 2 - the strategy goes silent", ("demo-strategy-alive",), "demo-strategy-alive"),
    Act("runaway", "Act 3 - the strategy floods orders", ("demo-order-rate", "demo-open-orders"),
        "demo-order-rate"),
    Act("hl-runaway", "Act 4 - the strategy runs away on Hyperliquid", ("demo-order-rate", "demo-open-orders"),
        "demo-order-rate", HL_VENUE),
)
RUNAWAY_ACTS = ("runaway", "hl-runaway")


class Strategy:
    """The scripted 'trading strategy': quotes on every venue and heartbeats to the daemon."""

    def __init__(self, sims: DemoSims, accounts: DemoAccounts, daemon: Daemon) -> None:
        self.ox = sims.ox
        self.nado = sims.nado
        self.hl = sims.hl
        self.accounts = accounts
        self.daemon = daemon
        self.alive = True
        self.ox_mark = OX_ENTRY_PRICE
        self.nado_oracle = NADO_ENTRY_PRICE
        self.placed = 0

    async def heartbeat(self) -> None:
        # The same event `killswitch heartbeat demo-strategy` delivers through the control socket.
        while True:
            if self.alive:
                await self.daemon.send.send(HeartbeatReceived(STRATEGY, self.daemon.clock.monotonic_s()))
            await trio.sleep(HEARTBEAT_INTERVAL_S)

    async def quote(self) -> None:
        for i in range(1, BOOK_LEVELS + 1):
            await self.place_one(i)

    async def place_one(self, i: int) -> None:
        level = Decimal(i % 50 + 1)
        await self.ox.place_orders(self.accounts.ox_api_key, market=OX_MARKET, side="BUY",
                                   price=self.ox_mark * Decimal("0.9") - level * 10, qty="0.01")
        self.nado.place_orders(self.accounts.nado_sender, product_id=NADO_PRODUCT,
                               price=str(self.nado_oracle * Decimal("1.1") + level), qty="0.1", side="sell")
        self.place_hl(i)
        self.placed += 3

    def place_hl(self, i: int) -> None:
        # Rested on the simulator's book as if the strategy's own agent had placed it (the
        # orderUpdates push reaches the daemon like any other).
        level = Decimal(i % 50 + 1)
        self.hl.place(self.accounts.hl_address, HL_COIN, is_buy=True, price=str(HL_MARK * Decimal("0.9") - level),
                      size=HL_QTY)
        self.placed += 1

    def place_hl_stop(self) -> None:
        self.hl.place(self.accounts.hl_address, HL_COIN, is_buy=False, price=str(HL_STOP_PX), size=HL_QTY,
                      trigger={"isMarket": True, "triggerPx": str(HL_STOP_PX), "tpsl": "sl"}, reduce_only=False)
        self.placed += 1

    async def lose_step(self) -> None:
        self.ox_mark -= OX_MARK_STEP
        self.nado_oracle -= NADO_ORACLE_STEP
        await self.ox.set_mark(OX_MARKET, self.ox_mark)
        self.nado.set_oracle({NADO_PRODUCT: str(self.nado_oracle)})


class DemoRun:
    def __init__(self, printer: Printer, paths: DemoPaths) -> None:
        self.p = printer
        self.paths = paths
        self.t0 = time.monotonic()
        self.peaks = PeakTracker()
        self.focus: tuple[str, ...] = ()
        self.figures: list[TripFigures] = []
        self.sims: DemoSims | None = None
        self.backstop: dict | None = None  # as armed before the acts
        self.backstop_after: dict | None = None
        self.accounts: DemoAccounts | None = None
        self.daemon: Daemon | None = None
        self.daemon_exit: int | None = None
        self.startup_error: str | None = None

    # -------------------------------------------------------------- observation
    def sim_orders(self) -> dict[str, int]:
        assert self.sims is not None and self.accounts is not None
        return sim_open_orders(self.sims, self.accounts)

    def engine(self):
        assert self.daemon is not None and self.daemon.engine is not None
        return self.daemon.engine

    async def monitor(self) -> None:
        while True:
            status = self.daemon.status()
            self.p.progress(progress_line(time.monotonic() - self.t0, status, self.peaks, self.focus,
                                          self.sim_orders()))
            await trio.sleep(PROGRESS_INTERVAL_S)

    async def wait_for(self, pred: Callable[[], bool], timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            while not pred():
                await trio.sleep(POLL_S)
            return True
        return False

    def venues_connected(self) -> bool:
        st = self.daemon.status()
        return all(v["connected"] for v in st["venues"].values())

    def sims_flat(self) -> bool:
        return all(n == 0 for n in self.sim_orders().values())

    # -------------------------------------------------------------- acts
    async def run_act(self, act: Act, strategy: Strategy, drive: Callable[[], Awaitable[None]]) -> TripFigures:
        self.p.line()
        self.p.line(act.title)
        self.focus = act.focus_rules
        engine = self.engine()
        trips_before = len(engine.latch.trips)
        sweeps_before = engine.counters.sweeps
        error = None
        tripped = False
        async with trio.open_nursery() as n:
            n.start_soon(drive)
            tripped = await self.wait_for(lambda: engine.latch.tripped, ACT_TIMEOUT_S)
            if not tripped:
                error = f"no trip within {ACT_TIMEOUT_S:.0f}s"
            else:
                await self.wait_for(lambda: False, FLOOD_AFTER_TRIP_S if act.name in RUNAWAY_ACTS else 0)
            n.cancel_scope.cancel()
        flat = False
        if tripped:
            flat = await self.wait_for(lambda: self.sims_flat() and engine.all_flat(), FLAT_TIMEOUT_S)
            if not flat:
                error = f"not flat within {FLAT_TIMEOUT_S:.0f}s"
        status = self.daemon.status()
        self.p.progress(progress_line(time.monotonic() - self.t0, status, self.peaks, self.focus, self.sim_orders()))
        fig = await self.collect(act, status, trips_before, sweeps_before, flat, error)
        for line in trip_block(fig):
            self.p.line(line)
        return fig

    async def collect(self, act: Act, status: dict, trips_before: int, sweeps_before: int, flat: bool,
                      error: str | None) -> TripFigures:
        trips = status["trips"][trips_before:] if len(status["trips"]) > trips_before else []
        sim_orders = self.sim_orders()
        flat = flat and all(n == 0 for n in sim_orders.values())
        if not trips:
            return TripFigures(act.name, act.title, None, None, None, None, None, {}, {}, None, None, None, {},
                               sim_orders, False, error=error or "no trip")
        trip = trips[0]
        await self.daemon.audit.flush()
        records = read_audit(self.paths.audit_log)
        cancelled, requests, per_venue = figures_from_audit(records, trip["trip_id"])
        counters = status["counters"]
        firsts = [t["first_cancel_ms"] for t in per_venue.values() if t.get("first_cancel_ms") is not None]
        flats = [t["flat_ms"] for t in per_venue.values() if t.get("flat_ms") is not None]
        complete = len(flats) == len(status["venues"])
        if trip["rule"] != act.expected_rule and error is None:
            error = f"expected {act.expected_rule} to trip first, got {trip['rule']}"
        if act.expected_venue and act.expected_venue not in str(trip["observed"]) and error is None:
            error = f"expected the trip to name {act.expected_venue}, got {trip['observed']}"
        return TripFigures(
            act=act.name, title=act.title, trip_id=trip["trip_id"], rule=trip["rule"], rule_kind=trip["kind"],
            observed=trip["observed"], threshold=trip["threshold"], cancelled=cancelled, cancel_requests=requests,
            trip_to_first_cancel_ms=min(firsts) if firsts else counters["last_trip_to_first_cancel_ms"],
            trip_to_flat_ms=max(flats) if complete else None, last_flat_ms=counters["last_trip_to_flat_ms"],
            per_venue_ms=per_venue, sim_open_orders=sim_orders, flat=flat, swept=counters["sweeps"] - sweeps_before,
            error=error,
        )

    async def reset(self, why: str) -> bool:
        engine = self.engine()
        # --rebase: the operator accepts the act's loss; without it the kept drawdown peak
        # (baselines survive a reset) would trip again at once.
        await self.daemon.send.send(ResetCommand(operator="demo", reason=why, source="demo", rebase=True))
        ok = await self.wait_for(lambda: not engine.latch.tripped, 5.0)
        self.peaks.clear()
        self.p.line(f"  RESET --rebase by operator 'demo' (audited): {why}" if ok else "  RESET did not take effect")
        return ok

    # -------------------------------------------------------------- main
    async def main(self, redactor: SecretRedactor) -> None:
        async with trio.open_nursery() as nursery:
            self.sims = sims = await start_sims(nursery)
            self.accounts = await create_accounts(sims)
            self.p.line(f"simulated OX.FUN on {sims.ox.ws_url}; simulated Nado on {sims.nado.gateway_ws_url}; "
                        f"simulated Hyperliquid on {sims.hl.ws_url}")
            config = write_config(self.paths, sims, self.accounts)
            self.daemon = Daemon(config, handle_signals=False, environ=self.accounts.env, redactor=redactor)
            self.p.line(f"daemon starting with {self.paths.config} (logs: {self.paths.daemon_log})")
            try:
                await nursery.start(self._run_daemon)
            except RuntimeError:
                self.startup_error = f"daemon did not start (exit {self.daemon_exit}); see {self.paths.daemon_log}"
                nursery.cancel_scope.cancel()
                return
            if not await self.wait_for(self.venues_connected, 10.0):
                self.startup_error = "venues did not connect within 10s"
            self.p.line(f"daemon READY: venues {', '.join(self.daemon.status()['venues'])}; "
                        f"rules {', '.join(r['name'] for r in self.daemon.status()['rules'])}")
            if self.startup_error is None and not await self.wait_backstop():
                self.startup_error = f"the {HL_VENUE} backstop was not armed within {BACKSTOP_TIMEOUT_S:.0f}s"
            strategy = Strategy(sims, self.accounts, self.daemon)
            nursery.start_soon(strategy.heartbeat)
            nursery.start_soon(self.monitor)
            if self.startup_error is None:
                await self.acts(strategy)
                # Trips cancel orders, not the backstop: the daemon keeps refreshing it throughout.
                self.backstop_after = view = self.backstop_view()
                self.p.line()
                self.p.line(f"{HL_VENUE} backstop after the acts: "
                            + (f"still ARMED, would fire in {view['fires_in_s']:.0f}s" if view["armed"]
                               else "NOT armed"))
            self.daemon.request_stop()
            await self.wait_for(lambda: self.daemon_exit is not None, 10.0)
            nursery.cancel_scope.cancel()

    def backstop_view(self) -> dict:
        """The daemon's view of the Hyperliquid backstop next to the simulator's own."""
        bs = self.daemon.status()["venues"].get(HL_VENUE, {}).get("backstop") or {}
        fires_at_ms = bs.get("fires_at_ms")
        now_ms = self.daemon.clock.wall_ms()
        return {"venue": HL_VENUE, "armed": bool(bs.get("armed")), "fires_at_ms": fires_at_ms,
                "fires_in_s": None if fires_at_ms is None else round((fires_at_ms - now_ms) / 1000, 1),
                "sim_fires_at_ms": sim_backstop_ms(self.sims, self.accounts),
                "unavailable_reason": bs.get("unavailable_reason")}

    async def wait_backstop(self) -> bool:
        armed = await self.wait_for(lambda: self.backstop_view()["armed"], BACKSTOP_TIMEOUT_S)
        self.backstop = view = self.backstop_view()
        if armed and view["sim_fires_at_ms"] == view["fires_at_ms"]:
            at = time.strftime("%H:%M:%S", time.gmtime(view["fires_at_ms"] / 1000))
            self.p.line(f"{HL_VENUE} backstop ARMED: the venue's own dead-man's switch (scheduleCancel) would "
                        f"cancel everything at {at} UTC (in {view['fires_in_s']:.0f}s) unless the daemon keeps "
                        "refreshing it")
            return True
        self.p.line(f"{HL_VENUE} backstop NOT armed: {view['unavailable_reason'] or 'no confirmation'} "
                    f"(simulator: {view['sim_fires_at_ms']})")
        return False

    async def acts(self, strategy: Strategy) -> None:
        async def losing() -> None:
            await strategy.quote()
            await trio.sleep(0.5)
            self.p.line("  the strategy's positions move against it...")
            while True:
                await strategy.lose_step()
                await trio.sleep(LOSS_STEP_S)

        async def silent() -> None:
            strategy.alive = True
            await strategy.quote()
            await trio.sleep(1.0)
            self.p.line("  the strategy stops sending heartbeats...")
            strategy.alive = False

        async def runaway() -> None:
            strategy.alive = True
            await strategy.quote()
            await trio.sleep(0.5)
            self.p.line("  the strategy starts flooding orders...")
            i = BOOK_LEVELS
            while True:
                i += 1
                await strategy.place_one(i)
                await trio.sleep(FLOOD_INTERVAL_S)

        async def hl_runaway() -> None:
            strategy.alive = True
            await strategy.quote()
            strategy.place_hl_stop()
            await trio.sleep(0.5)
            self.p.line(f"  the strategy rests a stop trigger on {HL_VENUE}, then floods orders there...")
            i = BOOK_LEVELS
            while True:
                i += 1
                strategy.place_hl(i)
                await trio.sleep(FLOOD_INTERVAL_S)

        drives = {"drawdown": losing, "silent": silent, "runaway": runaway, "hl-runaway": hl_runaway}
        for n, act in enumerate(ACTS):
            if n:
                strategy.alive = True  # heartbeats resume before the reset, so act 2 does not re-trip
                await self.wait_for(lambda: False, HEARTBEAT_INTERVAL_S * 2)
                if not await self.reset(f"demo: act {n} done, re-arming"):
                    break
            fig = await self.run_act(act, strategy, drives[act.name])
            self.figures.append(fig)
            if not fig.flat:
                break

    async def _run_daemon(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.daemon_exit = await self.daemon.run(task_status=task_status)


def summary(run: DemoRun, kept: bool, elapsed_s: float) -> dict:
    acts_ok = len(run.figures) == len(ACTS) and all(f.flat for f in run.figures)
    return {
        "ok": acts_ok and run.startup_error is None,
        "acts": [f.as_dict() for f in run.figures],
        "backstop": run.backstop,
        "backstop_after_acts": run.backstop_after,
        "startup_error": run.startup_error,
        "daemon_exit": run.daemon_exit,
        "elapsed_s": round(elapsed_s, 3),
        "state_dir": str(run.paths.root),
        "audit_log": str(run.paths.audit_log),
        "daemon_log": str(run.paths.daemon_log),
        "config": str(run.paths.config),
        "kept": kept,
    }


def main(args) -> int:
    json_mode = bool(getattr(args, "json", False))
    keep = bool(getattr(args, "keep", False))
    root = Path(tempfile.mkdtemp(prefix="killswitch-demo-"))
    paths = DemoPaths.under(root)
    printer = Printer(sys.stdout, quiet=json_mode)
    run = DemoRun(printer, paths)
    t0 = time.monotonic()
    try:
        with open(paths.daemon_log, "a", encoding="utf-8") as log_file:
            redactor = configure_logging("json", stream=log_file)
            printer.line("killswitch demo: the real daemon against simulated OX.FUN, Nado and Hyperliquid on 127.0.0.1")

            async def bounded() -> None:
                with trio.move_on_after(TOTAL_TIMEOUT_S):
                    await run.main(redactor)

            trio.run(bounded)
        out = summary(run, keep, time.monotonic() - t0)
        if json_mode:
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
        else:
            printer.line()
            if run.startup_error:
                printer.line(f"problem: {run.startup_error}")
            verdict = "every act ended FLAT (by the simulators' own order books)" if out["ok"] else "NOT all acts flat"
            printer.line(f"demo finished in {out['elapsed_s']:.1f}s: {verdict}")
            where = "" if keep else " (deleted at exit; run with --keep to inspect it)"
            printer.line(f"audit log: {paths.audit_log}{where}")
            if keep:
                printer.line(f"state dir kept: {paths.root} (daemon log {paths.daemon_log}, config {paths.config})")
        return 0 if out["ok"] else 1
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
