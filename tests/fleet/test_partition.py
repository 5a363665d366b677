"""Bus loss and partitions on a real 3-node JetStream cluster: one node is killed, the two
instances that only know that node lose the bus; each branch of ``on_bus_loss`` is shown,
and on reconnect the instance reconciles with the key-value latch (a fleet trip published
during the outage trips it as it returns). The cluster does not advertise its other nodes to
clients, so losing the node is losing the bus (a partition), not a fail-over."""

from __future__ import annotations

import trio

from killswitch.fleet.config import FleetConfig
from killswitch.fleet.operator import fleet_trip
from tests.e2e.helpers import short_tmpdir
from tests.fleet.world import MARKET, OX_KEY, Instance, in_asyncio, sims, start_instance, until

R3 = "latch_replicas: 3\n"


def policy(action: str) -> str:
    return R3 + f"on_bus_loss: {{after: 500ms, action: {action}}}\n"


async def test_partitioned_instances_alarm_or_trip_by_policy_and_reconcile_a_trip_missed_meanwhile(
    nats_cluster,
):
    n1, n2, n3 = nats_cluster
    with trio.fail_after(60), short_tmpdir() as root:
        async with sims(3) as (sim_t, sim_a, sim_c), trio.open_nursery() as nursery:
            t = Instance("policy-trip", root / "t", sim_t, [n3.url], fleet_extra=policy("trip"))
            a = Instance("policy-alarm", root / "a", sim_a, [n3.url], fleet_extra=policy("alarm"))
            c = Instance("control", root / "c", sim_c, [n1.url, n2.url], fleet_extra=R3)
            for inst in (t, a, c):
                await inst.sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=2)
                await start_instance(nursery, inst)
            await until(lambda: all(i.daemon.fleet.watch.state.value == "up" for i in (t, a, c)))

            n3.kill()  # the partition
            await until(lambda: t.state == "tripped")
            await until(lambda: "fleet_bus" in a.daemon.engine.alarms)
            assert "fleet_bus" in t.daemon.engine.alarms
            assert (await t.events("trip"))[-1]["source"] == "fleet_bus_loss"
            await until(lambda: t.open_orders() == 0)
            assert a.state == "armed" and a.open_orders() == 2  # alarm only: keeps guarding on its own rules
            assert c.state == "armed" and "fleet_bus" not in c.daemon.engine.alarms

            # A fleet trip while the two are cut off: the rest of the fleet trips.
            cfg = FleetConfig(
                servers=(n1.url,), name="test", instance="op", silent_after_s=0.5, latch_replicas=3
            )
            # The deadline covers the latch write too: the bucket's stream may be electing a new
            # leader after losing n3, and the CLI retries the write until the deadline.
            lines: list[str] = []
            code, board = await in_asyncio(
                lambda: fleet_trip(
                    cfg, reason="during partition", operator="risk", deadline_s=25, on_line=lines.append
                )
            )
            assert code == 0 and any(ln.startswith("FLEET TRIP") and ": latched," in ln for ln in lines), (
                lines
            )
            assert board.by_instance["control"].verdict == "flat"
            assert a.state == "armed"

            # The partition heals: the alarm clears and the latch read trips the alarm-policy instance.
            n3.start()
            await trio.to_thread.run_sync(n3.wait_ready)
            with trio.move_on_after(30):
                await until(lambda: a.state == "tripped")
            assert a.state == "tripped", (
                a.daemon.fleet.status(),
                a.daemon.fleet.bus.counters,
                a.daemon.engine.alarms,
            )
            await until(lambda: a.open_orders() == 0)
            rec = await a.events("fleet_trip")
            assert rec and rec[0]["via"] == "latch" and rec[0]["fleet_trip_id"] == board.fleet_trip_id
            await until(lambda: "fleet_bus" not in a.daemon.engine.alarms)
            assert await a.events("fleet_bus_restored")
            await until(lambda: bool(t.audit_events("fleet_trip")))  # the tripped one latches on it too
            nursery.cancel_scope.cancel()
