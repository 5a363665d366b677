"""Fleet trip, latch and reset across in-process daemons (each with its own OX.FUN simulator)
on a real nats-server with JetStream."""

from __future__ import annotations

import trio

from killswitch.fleet.config import FleetConfig
from killswitch.fleet.operator import fleet_reset, fleet_status, fleet_trip
from tests.e2e.helpers import short_tmpdir
from tests.fleet.world import MARKET, OX_KEY, Instance, in_asyncio, sims, start_instance, stop_instance, until


def operator_cfg(servers: list[str]) -> FleetConfig:
    return FleetConfig(servers=tuple(servers), name="test", instance="operator", silent_after_s=1.0)


async def test_fleet_trip_flattens_every_instance_acks_twice_and_audits_id_operator_origin(nats_server):
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(2) as (sim_a, sim_b), trio.open_nursery() as nursery:
            a = Instance("host-a", root / "a", sim_a, [nats_server.url])
            b = Instance("host-b", root / "b", sim_b, [nats_server.url])
            for inst in (a, b):
                await inst.sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=3)
                await start_instance(nursery, inst)
            cfg = operator_cfg([nats_server.url])
            # Both have published a status, so the CLI expects both.
            await until(lambda: all(i.daemon.fleet.counters.status_sent for i in (a, b)))
            lines: list[str] = []
            code, board = await in_asyncio(
                lambda: fleet_trip(
                    cfg, reason="desk kill", operator="risk-anna", deadline_s=10, on_line=lines.append
                )
            )
            assert code == 0, lines
            assert board.counts() == {"flat": 2, "acked": 0, "missing": 0}, lines
            assert any(line.startswith("host-a") and " flat " in line for line in lines), lines
            for inst in (a, b):
                assert inst.open_orders() == 0
                assert inst.state == "tripped"
                acks = board.by_instance[inst.name]
                assert (
                    acks.tripped.trip_to_first_cancel_ms is not None
                    and acks.tripped.trip_to_first_cancel_ms >= 0
                )
                assert acks.flat.trip_to_flat_ms is not None
                rec = await inst.events("fleet_trip")
                assert len(rec) == 1 and rec[0]["fleet_trip_id"] == board.fleet_trip_id
                assert rec[0]["operator"] == "risk-anna" and rec[0]["origin"].startswith("cli@")
                trip = await inst.events("trip")
                assert trip[-1]["source"] == "fleet" and trip[-1]["operator"] == "risk-anna"
                assert board.fleet_trip_id in trip[-1]["reason"]

            # reset --fleet: every instance re-armed, each audits it.
            code = await in_asyncio(
                lambda: fleet_reset(
                    cfg, reason="all clear", operator="risk-bob", deadline_s=10, on_line=lines.append
                )
            )
            assert code == 0, lines
            for inst in (a, b):
                assert inst.state == "armed"
                assert (await inst.events("fleet_reset"))[0]["operator"] == "risk-bob"
                assert (await inst.events("reset"))[-1]["source"] == "fleet"
            nursery.cancel_scope.cancel()


async def test_instance_restarted_with_empty_state_dir_comes_up_tripped_from_the_fleet_latch(nats_server):
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            a = Instance("host-a", root / "a", sim, [nats_server.url])
            await start_instance(nursery, a)
            cfg = operator_cfg([nats_server.url])
            code, board = await in_asyncio(
                lambda: fleet_trip(cfg, reason="kill", operator="risk", deadline_s=5, on_line=lambda s: None)
            )
            assert code == 0 and a.state == "tripped"
            await stop_instance(a)
            # While it is down: its state dir is lost and a strategy places orders.
            import shutil

            shutil.rmtree(a.root / "state")
            await sim.place_orders(OX_KEY, market=MARKET, side="SELL", price="70000", count=4)
            assert a.open_orders() == 4
            a.exit_codes.clear()
            t0 = trio.current_time()
            await start_instance(nursery, a)
            # Ready already TRIPPED (the fleet latch is read before the venues connect) ...
            assert a.state == "tripped"
            assert a.daemon.ready.is_set()
            await until(lambda: a.open_orders() == 0)
            print(f"restart to flat: {trio.current_time() - t0:.3f}s")
            rec = await a.events("fleet_trip")
            assert rec and rec[0]["via"] == "latch" and rec[0]["fleet_trip_id"] == board.fleet_trip_id
            nursery.cancel_scope.cancel()


async def test_rule_with_fleet_true_trips_every_other_instance(nats_server):
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(2) as (sim_a, sim_b), trio.open_nursery() as nursery:
            rules = "rules:\n  - {name: max-open, kind: max_open_orders, max: 2, fleet: true}\n"
            a = Instance("host-a", root / "a", sim_a, [nats_server.url], rules=rules)
            b = Instance("host-b", root / "b", sim_b, [nats_server.url])
            await sim_b.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=2)
            for inst in (a, b):
                await start_instance(nursery, inst)
            await until(lambda: all(i.daemon.fleet.server for i in (a, b)))
            # A's strategy runs away: its rule trips A, and A trips the fleet.
            await sim_a.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=3)
            await until(lambda: b.state == "tripped")
            await until(lambda: b.open_orders() == 0 and a.open_orders() == 0)
            pub = await a.events("fleet_trip_published")
            assert len(pub) == 1 and pub[0]["rule"] == "max-open"
            got = await b.events("fleet_trip")
            assert got[0]["fleet_trip_id"] == pub[0]["fleet_trip_id"] and got[0]["origin"] == "host-a"
            assert got[0]["operator"] == "rule:max-open"
            # A trips once (its own rule), not again from its own fleet message.
            assert [t["source"] for t in (await a.events("trip"))] == ["rule"]
            nursery.cancel_scope.cancel()


async def test_bad_messages_on_the_trip_subject_are_counted_and_ignored(nats_server):
    import nats

    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            a = await start_instance(nursery, Instance("host-a", root / "a", sim, [nats_server.url]))
            await until(lambda: bool(a.daemon.fleet.server))

            async def garbage():
                nc = await nats.connect(nats_server.url)
                for data in (
                    b"not json",
                    b'{"v":1,"type":"trip"}',
                    b'{"v":9,"type":"trip"}',
                    b"[1]",
                    b'{"v":1,"type":"trip","fleet_trip_id":"a b","reason":"x","operator":"o",'
                    b'"origin":"o","ts_wall_ms":1}',
                    b"x" * 5000,
                ):
                    await nc.publish("ks.test.trip", data)
                await nc.flush()
                await nc.close()

            await in_asyncio(garbage)
            await until(lambda: a.daemon.fleet.decoder.bad_total == 6)
            assert a.state == "armed"
            assert a.daemon.fleet.decoder.bad["trip"] == 6
            nursery.cancel_scope.cancel()


async def test_status_fleet_lists_instances_and_shows_a_stopped_one_as_silent(nats_server):
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(2) as (sim_a, sim_b), trio.open_nursery() as nursery:
            a = await start_instance(nursery, Instance("host-a", root / "a", sim_a, [nats_server.url]))
            b = await start_instance(nursery, Instance("host-b", root / "b", sim_b, [nats_server.url]))
            await until(lambda: all(i.daemon.fleet.counters.status_sent for i in (a, b)))
            cfg = operator_cfg([nats_server.url])
            lines: list[str] = []
            await in_asyncio(lambda: fleet_status(cfg, on_line=lines.append))
            rows = {line.split()[0]: line for line in lines[2:-1]}
            assert rows["host-a"].split()[1] == "ARMED" and rows["host-a"].split()[2] == "1/1", lines
            assert "0 silent" in lines[-1]
            await stop_instance(b)
            lines.clear()
            with trio.fail_after(5):
                while not any("SILENT" in line for line in lines):
                    lines.clear()
                    await in_asyncio(lambda: fleet_status(cfg, on_line=lines.append))
                    await trio.sleep(0.2)
            assert "1 silent: host-b" in lines[-1], lines
            nursery.cancel_scope.cancel()


async def test_an_unreadable_trip_entry_in_the_latch_trips_the_instance(nats_server):
    import nats

    from killswitch.fleet.bus import ensure_buckets
    from killswitch.fleet.subjects import Subjects

    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:

            async def corrupt():
                nc = await nats.connect(nats_server.url)
                js = nc.jetstream()
                await ensure_buckets(js, Subjects("test"), 1)
                await js.publish("$KV.ks_test_latch.trip", b"{garbage")
                await nc.close()

            await in_asyncio(corrupt)
            a = await start_instance(nursery, Instance("host-a", root / "a", sim, [nats_server.url]))
            assert a.state == "tripped"  # fail closed, before READY
            rec = await a.events("fleet_trip")
            assert rec[0]["fleet_trip_id"] == "rev1" and rec[0]["via"] == "latch"
            assert a.daemon.fleet.decoder.bad_total >= 1
            nursery.cancel_scope.cancel()


async def test_fleet_metrics_show_bus_up_and_applied_trips(nats_server):
    from prometheus_client import generate_latest

    from killswitch.metrics import make_registry

    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            a = await start_instance(nursery, Instance("host-a", root / "a", sim, [nats_server.url]))
            await until(lambda: a.daemon.fleet.watch.state.value == "up")
            code, _ = await in_asyncio(
                lambda: fleet_trip(
                    operator_cfg([nats_server.url]),
                    reason="m",
                    operator="o",
                    deadline_s=5,
                    on_line=lambda s: None,
                )
            )
            text = generate_latest(make_registry(a.daemon)).decode()
            assert "killswitch_fleet_bus_up 1.0" in text
            assert "killswitch_fleet_trips_applied_total 1.0" in text
            assert "killswitch_fleet_acks_sent_total 2.0" in text
            nursery.cancel_scope.cancel()


async def test_with_the_bus_down_a_fleet_rule_still_trips_and_cancels_locally_and_connects_later():
    import nats
    import orjson

    from killswitch.fleet.bus import read_latch
    from killswitch.fleet.natsserver import NatsServer, free_port
    from killswitch.fleet.subjects import Subjects

    port = free_port()
    dead = f"nats://127.0.0.1:{port}"  # nothing listens there (yet)
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            rules = "rules:\n  - {name: max-open, kind: max_open_orders, max: 2, fleet: true}\n"
            a = await start_instance(nursery, Instance("host-a", root / "a", sim, [dead], rules=rules))
            assert a.daemon.fleet.watch.state.value == "lost"
            await sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=3)
            await until(lambda: a.state == "tripped" and a.open_orders() == 0)
            await until(lambda: bool(a.audit_events("fleet_trip_published")))
            assert (await a.events("fleet_trip_published"))[0]["bus_up"] is False
            assert (await a.events("trip"))[0]["source"] == "rule"
            # The server comes up: the initial connect, retried with backoff, gets there.
            srv = NatsServer(root / "nats", port=port).start()
            try:
                await trio.to_thread.run_sync(srv.wait_ready)
                await until(lambda: a.daemon.fleet.watch.state.value == "up")
                assert a.daemon.fleet.bus.counters.connects == 1
                # The fleet trip it could not publish while cut off reaches the latch now.
                fid = (await a.events("fleet_trip_published"))[0]["fleet_trip_id"]
                await until(lambda: a.daemon.fleet._outstanding is None)

                async def latched_id():
                    nc = await nats.connect(srv.url)
                    try:
                        read = await read_latch(nc.jetstream(), Subjects("test"))
                    finally:
                        await nc.close()
                    return orjson.loads(read.trip.data)["fleet_trip_id"]

                assert await in_asyncio(latched_id) == fid
            finally:
                srv.kill()
            nursery.cancel_scope.cancel()


async def test_a_fault_in_the_fleet_service_is_an_alarm_and_the_daemon_keeps_guarding(nats_server):
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            a = await start_instance(nursery, Instance("host-a", root / "a", sim, [nats_server.url]))
            await until(lambda: a.daemon.fleet.counters.status_sent > 0)

            def broken():
                raise RuntimeError("injected")

            a.daemon.fleet.status_message = broken
            await until(lambda: "fleet_fault" in a.daemon.engine.alarms)
            assert "injected" in a.daemon.engine.alarms["fleet_fault"]
            # Still guarding, and still on the fleet: a fleet trip trips it.
            await sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=2)
            await until(lambda: a.daemon.engine.state.book("ox-main").orders)
            code, _ = await in_asyncio(
                lambda: fleet_trip(
                    operator_cfg([nats_server.url]),
                    reason="x",
                    operator="o",
                    deadline_s=5,
                    on_line=lambda s: None,
                )
            )
            await until(lambda: a.state == "tripped" and a.open_orders() == 0)
            assert not a.exit_codes
            nursery.cancel_scope.cancel()
