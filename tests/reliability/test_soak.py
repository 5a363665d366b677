"""Randomised soak: seeded scenarios against both simulators at once (real daemon, real sockets).

Each scenario draws order flow on OX.FUN and Nado (resting + trigger orders, several markets),
a fault schedule (self-clearing faults from both sims' fault menus), a trip cause (manual, or a
``max_open_orders`` breach) and a runaway strategy that keeps placing orders after the trip.
Invariants, by the sims' own books: every breach trips; a latched trip ends flat on both venues;
no order placed after the trip survives; no crash; the audit log parses; memory stays bounded.

    KILLSWITCH_SOAK_N=200 pytest tests/reliability/test_soak.py     # large run
    KILLSWITCH_SOAK_SEED=1234 pytest tests/reliability/test_soak.py # replay one seed
"""

from __future__ import annotations

import os
import random
import time

import pytest
import trio

from .harness import (
    NADO_PRODUCTS,
    NADO_VENUE,
    OX_MARKETS,
    OX_VENUE,
    assert_trip_audit_complete,
    audit_records,
    daemon_yaml,
    running_daemon,
    start_nado,
    start_ox,
    trip,
    venue_flat,
    wait_for,
)

BASE_SEED = 20_260_000
if os.environ.get("KILLSWITCH_SOAK_SEED"):
    SEEDS = [int(os.environ["KILLSWITCH_SOAK_SEED"])]
else:
    SEEDS = [BASE_SEED + i for i in range(int(os.environ.get("KILLSWITCH_SOAK_N", "5")))]

OX_FAULTS = ["none", "rest403", "rest429", "restmaint", "ack_delay", "lose_race", "drop_at_cancel", "drop_acks_once"]
NADO_FAULTS = ["none", "drop_response", "maintenance", "reject2020", "reject1000", "delay", "drop_conns", "reject2011"]
_RSS: list[int] = []


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def _scenario(seed: int, tmp_path) -> dict:
    rng = random.Random(seed)
    plan = {
        "seed": seed,
        "ox_orders": [rng.randint(0, 25) for _ in OX_MARKETS],
        "nado_orders": [rng.randint(0, 25) for _ in NADO_PRODUCTS],
        "nado_triggers": rng.randint(0, 4),
        "ox_fault": rng.choice(OX_FAULTS),
        "nado_fault": rng.choice(NADO_FAULTS),
        "cause": rng.choice(["manual", "breach"]),
        "runaway_ox": rng.randint(0, 8),
        "runaway_nado": rng.randint(0, 8),
    }
    max_open = 60
    rules = f"  - {{name: max-open, kind: max_open_orders, max: {max_open}}}\n"
    async with trio.open_nursery() as nursery:
        ox = await start_ox(nursery)
        nado = await start_nado(nursery)
        for m, n in zip(OX_MARKETS, plan["ox_orders"]):
            if n:
                await ox.place(n, m, side=rng.choice(["BUY", "SELL"]), price=rng.choice(["1", "999999"]))
        for p, n in zip(NADO_PRODUCTS, plan["nado_orders"]):
            if n:
                nado.place(n, p, side=rng.choice(["buy", "sell"]))
        if plan["nado_triggers"]:
            nado.place(plan["nado_triggers"], NADO_PRODUCTS[0], trigger=True)
        n_ox0, n_nado0 = len(ox.open_orders()), nado.open_count()
        text = daemon_yaml(tmp_path, ox.venue_yaml() + nado.venue_yaml(), rules)
        async with running_daemon(tmp_path, text, {**ox.env(), **nado.env()}) as d:
            await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == n_ox0
                           and d.engine.state.open_count(NADO_VENUE) == n_nado0)
            assert not d.engine.latch.tripped
            # --- faults
            f = plan["ox_fault"]
            dropped: list = []
            if f in ("rest403", "rest429", "restmaint"):
                await ox.sim.inject_fault("rest", mode={"rest403": "403", "rest429": "429", "restmaint": "maintenance"}[f],
                                          count=rng.randint(1, 4))
            elif f == "ack_delay":
                await ox.sim.inject_fault("ack_delay", seconds=rng.choice([0.3, 1.5]))
            elif f == "lose_race":
                await ox.sim.inject_fault("lose_race")
            elif f in ("drop_at_cancel", "drop_acks_once"):
                if f == "drop_acks_once":
                    await ox.sim.inject_fault("drop_acks")

                def on_cancel(t, tag, n):
                    if not dropped:
                        dropped.append(t)
                        ox.sim.faults.drop_acks = False
                        if f == "drop_at_cancel":
                            nursery.start_soon(ox.sim.drop_connections, ox.key)

                ox.sim.on_cancel_received = on_cancel
            g = plan["nado_fault"]
            k = rng.randint(1, 3)
            if g == "drop_response":
                nado.sim.set_faults(drop_response_count=k)
            elif g == "maintenance":
                nado.sim.set_faults(maintenance_code=rng.choice([1004, 2068]), maintenance_count=k)
            elif g in ("reject2020", "reject1000", "reject2011"):
                nado.sim.set_faults(reject_code=int(g[-4:]), reject_count=k)
            elif g == "delay":
                nado.sim.set_faults(delay_s=rng.choice([0.2, 1.5]), delay_count=1)
            # --- trip cause
            if plan["cause"] == "manual":
                await trip(d, f"soak seed {seed}")
            else:
                # a runaway strategy pushes one venue over max_open_orders: the breach must trip
                venue = rng.choice([OX_VENUE, NADO_VENUE])
                need = max_open + 1 - (n_ox0 if venue == OX_VENUE else n_nado0)
                if need > 0:
                    if venue == OX_VENUE:
                        await ox.place(need, OX_MARKETS[0])
                    else:
                        nado.place(need, NADO_PRODUCTS[1])
                elif not d.engine.latch.tripped:
                    await trip(d, f"soak seed {seed} (already above)")
            with trio.fail_after(10):
                await wait_for(lambda: d.engine.latch.tripped)
            if g == "drop_conns":
                await nado.sim.drop_connections("all")
            # --- runaway after the trip
            for _ in range(plan["runaway_ox"]):
                await ox.place(1, rng.choice(OX_MARKETS))
            if plan["runaway_nado"]:
                nado.place(plan["runaway_nado"], rng.choice(NADO_PRODUCTS))
            with trio.fail_after(25):  # bound for any fault in the menu (Nado 1000 backs off 10 s)
                await wait_for(lambda: not ox.open_orders() and nado.open_count() == 0
                               and venue_flat(d, OX_VENUE) and venue_flat(d, NADO_VENUE))
            assert d.engine.latch.tripped
            assert not d.exit_code, d.exit_code  # still running
            recs = await audit_records(d)
        nursery.cancel_scope.cancel()
    assert_trip_audit_complete(recs, OX_VENUE, need_cancel=False)
    assert_trip_audit_complete(recs, NADO_VENUE, need_cancel=False)
    if plan["cause"] == "breach":
        assert any(r["event"] == "trip" for r in recs)
    return plan


@pytest.mark.parametrize("seed", SEEDS)
async def test_soak_scenario(seed, tmp_path):
    t0 = time.monotonic()
    try:
        with trio.fail_after(60):
            plan = await _scenario(seed, tmp_path)
    except BaseException:
        print(f"\nSOAK FAILURE: replay with KILLSWITCH_SOAK_SEED={seed}")
        raise
    _RSS.append(_rss_kb())
    print(f"soak seed={seed} {plan} {time.monotonic() - t0:.2f}s")


def test_soak_memory_bounded():
    """RSS after the scenarios: the growth from the first to the last stays bounded."""
    if len(_RSS) < 2:
        pytest.skip("needs at least two scenarios in this run")
    growth_mb = (_RSS[-1] - _RSS[0]) / 1024
    per_scenario = growth_mb / (len(_RSS) - 1)
    print(f"RSS first={_RSS[0] // 1024} MB last={_RSS[-1] // 1024} MB over {len(_RSS)} scenarios")
    assert per_scenario < 5.0, f"{per_scenario:.2f} MB per scenario"
