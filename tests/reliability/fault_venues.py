"""One parametrised per-venue world for the fault matrix.

Every fault test has the same frame: simulator up with a known book, the real Daemon
in-process against it, wait until the daemon sees every order, inject a fault, trip, wait
(bounded) for the simulator's own book to be empty, read the audit log. :func:`fault_run`
is that frame; a :class:`FaultVenue` says how one venue builds its book and injects the
faults every venue has (the sims' fault knobs differ, the scenario does not).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from killswitch.clock import Clock
from killswitch.daemon import Daemon

from . import harness as h


class FaultVenue:
    """How one venue's world is built and how the common faults are injected into its sim."""

    name: str
    venue: str
    n: int
    # The code an unanswered cancel is recorded with (OX.FUN: our own request timeout; Nado's
    # gateway socket is torn down as out of order first, so the code varies).
    lost_ack_code: str | None = None
    # Hyperliquid: orders placed after a trip can show up in a listing before their pushes.
    listing_may_beat_pushes: bool = False

    async def start(self, nursery, *, sim_clock: Clock | None, sim_kw: dict) -> Any:
        raise NotImplementedError

    async def place_book(self, w) -> None:
        raise NotImplementedError

    def open_count(self, w) -> int:
        raise NotImplementedError

    async def place_more(self, w, n: int) -> None:
        raise NotImplementedError


class OxVenue(FaultVenue):
    name, venue, n = "oxfun", h.OX_VENUE, 30
    lost_ack_code = "timeout"

    async def start(self, nursery, *, sim_clock, sim_kw):
        return await h.start_ox(nursery, clock=sim_clock, **sim_kw)

    async def place_book(self, w):
        await w.place(self.n // 2, h.OX_MARKETS[0])
        await w.place(self.n - self.n // 2, h.OX_MARKETS[1], side="SELL", price="999999")

    def open_count(self, w):
        return len(w.open_orders())

    async def place_more(self, w, n):
        await w.place(n, h.OX_MARKETS[0])

    async def drop_acks(self, w):
        await w.sim.inject_fault("drop_acks")

    async def delay_acks(self, w, seconds: float):
        await w.sim.inject_fault("ack_delay", seconds=seconds)

    async def refuse_cancels_forever(self, w):
        await w.sim.inject_fault("reject_cancels", code="000101")
        from killswitch.net.http import Response

        async def refuse(req, acct):
            return Response.json({"success": False, "code": "000101", "message": "maintenance"}, 503)

        w.sim._r_cancel_all = refuse
        w.sim._r_cancel = refuse
        w.sim._register_routes()

    async def allow_cancels(self, w):
        del w.sim._r_cancel_all, w.sim._r_cancel
        w.sim._register_routes()
        await w.sim.inject_fault("clear")


class NadoVenue(FaultVenue):
    name, venue = "nado", h.NADO_VENUE
    n_resting, n_trigger = 24, 4
    n = n_resting + n_trigger

    async def start(self, nursery, *, sim_clock, sim_kw):
        return await h.start_nado(nursery, clock=sim_clock, **sim_kw)

    async def place_book(self, w):
        w.place(self.n_resting // 2, h.NADO_PRODUCTS[0])
        w.place(self.n_resting - self.n_resting // 2, h.NADO_PRODUCTS[1], side="sell")
        w.place(self.n_trigger, h.NADO_PRODUCTS[0], trigger=True)

    def open_count(self, w):
        return w.open_count()

    async def place_more(self, w, n):
        w.place(n, h.NADO_PRODUCTS[1])

    async def drop_acks(self, w):
        w.sim.set_faults(drop_response_count=2)  # processed, never answered

    async def delay_acks(self, w, seconds: float):
        w.sim.set_faults(delay_s=seconds, delay_count=1)

    async def refuse_cancels_forever(self, w):
        w.sim.set_faults(maintenance_code=1004, maintenance_count=10**6)

    async def allow_cancels(self, w):
        w.sim.set_faults(maintenance_count=0)


@dataclass
class HlWorld:
    sim: Any
    env_name: str = "RL_HL_KEY"

    def env(self) -> dict[str, str]:
        from tests.integration.hyperliquid_fixtures import KS_AGENT_KEY

        return {self.env_name: KS_AGENT_KEY}

    def venue_yaml(self, *, name: str = "hl-main", request_timeout: str = "1s", ping_interval: str = "500ms") -> str:
        from tests.integration.hyperliquid_fixtures import MASTER

        s = self.sim
        return (f"  - name: {name}\n    kind: hyperliquid\n    private_key: {{env: {self.env_name}}}\n"
                f"    network: {s.network}\n    account_address: \"{MASTER}\"\n    rest_url: {s.rest_url}\n"
                f"    ws_url: {s.ws_url}\n    ping_interval: {ping_interval}\n    request_timeout: {request_timeout}\n"
                f"    poll_interval: 1s\n    dms_after: 0s\n    backoff: {{initial: 50ms, max: 300ms}}\n"
                f"    ip_weight_per_min: 1000000000\n")

    def open_count(self) -> int:
        from tests.integration.hyperliquid_fixtures import MASTER

        return len(self.sim.core.accounts[MASTER].orders)

    def place(self, n: int, coin: str = "ETH", *, trigger: bool = False) -> None:
        """Resting buys below the sim's marks (ETH 3000, BTC 60000, SOL 150), or reduce-only stops."""
        from tests.integration.hyperliquid_fixtures import MASTER

        price = {"ETH": "2000", "BTC": "50000", "SOL": "100"}[coin]
        if trigger:
            self.sim.place(MASTER, coin, is_buy=False, price="2000", size="0.1", count=n, reduce_only=True,
                           trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"})
        else:
            self.sim.place(MASTER, coin, is_buy=True, price=price, size="1" if coin == "SOL" else "0.1", count=n)


class HlVenue(FaultVenue):
    name, venue = "hyperliquid", "hl-main"
    listing_may_beat_pushes = True
    n_resting, n_trigger = 24, 4
    n = n_resting + n_trigger

    async def start(self, nursery, *, sim_clock, sim_kw):
        from tests.integration.hyperliquid_fixtures import start_sim

        # These scenarios repoll every 300 ms (~8000 IP weight a minute on this venue): not
        # about the per-IP budget, which test_fault_matrix_hyperliquid.py covers.
        kw = {"ip_weight_per_min": 10**9, **sim_kw}
        if sim_clock is not None:
            kw["clock"] = sim_clock
        return HlWorld(await start_sim(nursery, **kw))

    async def place_book(self, w):
        w.place(self.n_resting // 2, "ETH")
        w.place(self.n_resting - self.n_resting // 2, "BTC")
        w.place(self.n_trigger, "ETH", trigger=True)

    def open_count(self, w):
        return w.open_count()

    async def place_more(self, w, n):
        w.place(n, "SOL")

    async def drop_acks(self, w):
        w.sim.set_faults(drop_response_count=2)  # processed (committed), never answered

    async def delay_acks(self, w, seconds: float):
        w.sim.set_faults(delay_s=seconds, delay_count=1)

    async def refuse_cancels_forever(self, w):
        w.sim.set_faults(reject_count=10**6)

    async def allow_cancels(self, w):
        w.sim.set_faults(reject_count=0)


VENUES = {"oxfun": OxVenue(), "nado": NadoVenue(), "hyperliquid": HlVenue()}


@dataclass
class FaultRun:
    """One fault scenario in flight: the sim's world ``w``, the daemon ``d``, the nursery
    the sim runs in, and (after the ``async with``) the audit records."""

    fv: FaultVenue
    w: Any
    d: Daemon
    nursery: trio.Nursery
    recs: list[dict] = field(default_factory=list)

    @property
    def venue(self) -> str:
        return self.fv.venue

    def open_count(self) -> int:
        return self.fv.open_count(self.w)

    def flat(self) -> bool:
        return self.open_count() == 0 and h.venue_flat(self.d, self.venue)

    async def wait_flat(self, bound_s: float) -> None:
        with trio.fail_after(bound_s):
            await h.wait_for(self.flat)

    async def trip(self) -> None:
        await h.trip(self.d)

    def results(self, **match) -> list[dict]:
        return [r for r in self.recs
                if r["event"] == "cancel_result" and all(r.get(k) == v for k, v in match.items())]


@asynccontextmanager
async def fault_run(fv: FaultVenue, tmp_path: Path, *, deadline_s: float = 15, sim_clock: Clock | None = None,
                    sim_kw: dict | None = None, venue_kw: dict | None = None, clock: Clock | None = None,
                    **yaml_kw):
    """Sim with ``fv``'s book + the daemon; yields a :class:`FaultRun` once the daemon sees
    every order; reads the audit log on the way out; the whole scenario under ``deadline_s``."""
    with trio.fail_after(deadline_s):
        async with trio.open_nursery() as nursery:
            w = await fv.start(nursery, sim_clock=sim_clock, sim_kw=sim_kw or {})
            await fv.place_book(w)
            text = h.daemon_yaml(tmp_path, w.venue_yaml(**(venue_kw or {})), **yaml_kw)
            async with h.running_daemon(tmp_path, text, w.env(), clock=clock) as d:
                run = FaultRun(fv, w, d, nursery)
                await h.wait_for(lambda: d.engine.state.open_count(fv.venue) == fv.n)
                yield run
                run.recs = await h.audit_records(d)
            nursery.cancel_scope.cancel()
