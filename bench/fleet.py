"""Fleet figures: N ``killswitch run`` processes (each with its own simulated OX.FUN account,
in this process) on one real nats-server (or a 3-node cluster with ``--cluster``).

Measured, all stamps in this process on one clock (``time.perf_counter``):

* fleet trip -> each instance's first cancel on the wire (the simulator parsed the request),
  p50 / p99 / max over every instance x round, and the slowest instance per round;
* fleet trip -> every ``tripped`` ack, -> every ``flat`` ack (per round);
* restart-to-TRIPPED: ``kill -9`` one instance while the fleet is tripped, wipe its state dir,
  start it again: spawn -> control status ready and TRIPPED (includes Python start-up), and
  the daemon's own ``daemon_start`` -> ``fleet_trip`` audit stamps (the latch read itself).

The operator is a NatsBus (the daemon's own bus shell) in this process: the trip is stamped
right before ``publish`` hands it to the bus thread, so the hand-off is inside the figure.

    .venv/bin/python bench/fleet.py --instances 20 --rounds 20 --restarts 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon_proc import DaemonProcess, daemon_process, die_with_parent  # noqa: E402
from _harness import OX_MARKET, ox_venue_yaml  # noqa: E402
from _stats import reproduce_line, summarize  # noqa: E402

from killswitch.audit import read_audit  # noqa: E402
from killswitch.fleet.bus import NatsBus, Received  # noqa: E402
from killswitch.fleet.messages import Decoder, FleetReset, FleetTrip, TripAck, encode  # noqa: E402
from killswitch.fleet.natsserver import NatsServer, cluster  # noqa: E402
from killswitch.fleet.settings import BusSettings  # noqa: E402
from killswitch.fleet.subjects import LATCH_RESET_KEY, LATCH_TRIP_KEY, Subjects  # noqa: E402
from killswitch.venues.oxfun.sim import OxfunSim  # noqa: E402

FLEET = "bench"
ORDERS = 2

YAML = """
fleet:
  servers: [{servers}]
  name: bench
  instance: {instance}
  status_interval: 1s
  latch_replicas: {replicas}
daemon:
  state_dir: {{state}}
  control_socket: {{state}}/control.sock
  tick_interval: 100ms
  repoll_interval: 300ms
  cancel_deadline: 5s
  startup_timeout: 20s
  log_format: json
venues:
{venues}
rules:
  - {{name: max-open, kind: max_open_orders, max: 1000}}
"""


class Operator:
    """The operator's connection, with ack stamps taken on the bus thread as they arrive."""

    def __init__(self, servers: list[str]) -> None:
        self.subjects = Subjects(FLEET)
        self.decoder = Decoder()
        self.lock = threading.Lock()
        self.acks: dict[tuple[str, str, str], float] = {}
        self.bus = NatsBus(
            BusSettings(tuple(servers), "bench-operator"),
            self.subjects,
            subscribe=(self.subjects.ack_all,),
            on_event=self._on_event,
        )

    def _on_event(self, ev) -> None:
        if isinstance(ev, Received):
            t = time.perf_counter()
            ack = self.decoder.decode(ev.data, subject=ev.subject, expect=TripAck)
            if ack is not None:
                with self.lock:
                    self.acks.setdefault((ack.fleet_trip_id, ack.instance, ack.stage), t)

    def trip(self) -> tuple[str, float]:
        fid = uuid.uuid4().hex
        data = encode(FleetTrip(fid, "bench", "bench", "bench", int(time.time() * 1000)))
        t0 = time.perf_counter()
        self.bus.publish(self.subjects.trip, data, reply=self.subjects.acks_of_trip(fid))
        self.bus.kv_put(self.subjects.latch_bucket, LATCH_TRIP_KEY, data)
        return fid, t0

    def reset(self) -> None:
        data = encode(FleetReset(uuid.uuid4().hex, "next round", "bench", "bench", int(time.time() * 1000)))
        self.bus.kv_put(self.subjects.latch_bucket, LATCH_RESET_KEY, data)
        self.bus.publish(self.subjects.reset, data)

    def stamps(self, fid: str, stage: str) -> dict[str, float]:
        with self.lock:
            return {inst: t for (f, inst, s), t in self.acks.items() if f == fid and s == stage}


async def start_servers(root: Path, use_cluster: bool) -> list[NatsServer]:
    nodes = cluster(root / "nats", 3) if use_cluster else [NatsServer(root / "nats")]
    for n in nodes:
        n.preexec_fn = die_with_parent  # even a SIGKILLed bench leaves no server behind
        n.start()
    for n in nodes:
        await trio.to_thread.run_sync(n.wait_ready)
    return nodes


async def restart_to_tripped(dp: DaemonProcess, bench_env: dict) -> tuple[float, float | None]:
    """kill -9, wipe the state dir (keep the config), start again; (spawn -> TRIPPED s, audit ms)."""
    dp.proc.send_signal(signal.SIGKILL)
    await trio.to_thread.run_sync(dp.proc.wait)
    await dp.close()
    for p in dp.state_dir.iterdir():
        if p.name not in (dp.config_path.name, dp.log_path.name):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILLSWITCH_")}
    env.update(bench_env)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent)
    t0 = time.perf_counter()
    with open(dp.log_path, "ab") as log:
        dp.proc = subprocess.Popen(
            [sys.executable, "-m", "killswitch.cli", "run", "-c", str(dp.config_path)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=dp.state_dir,
            preexec_fn=die_with_parent,
        )
    with trio.fail_after(60):
        while True:
            try:
                st = await dp.status()
                if st.get("ready") and st["state"] == "tripped":
                    break
            except Exception:
                await dp.close()
            await trio.sleep(0.005)
    spawn_s = time.perf_counter() - t0
    start = trip = None
    with trio.move_on_after(5):  # the audit log is flushed shortly after, by its own task
        while trip is None:
            recs = read_audit(dp.state_dir / "audit.jsonl")
            start = next((r["ts_wall_ms"] for r in recs if r.get("event") == "daemon_start"), None)
            trip = next((r["ts_wall_ms"] for r in recs if r.get("event") == "fleet_trip"), None)
            await trio.sleep(0.02)
    audit_ms = (trip - start) if start is not None and trip is not None else None
    return spawn_s, audit_ms


async def main(args) -> None:
    """Every exit path stops the children: the normal end, an exception, Ctrl-C, SIGTERM and
    SIGHUP (turned into a cancel so the finally blocks run); a SIGKILL of the bench kills them
    through PR_SET_PDEATHSIG (die_with_parent)."""
    root = Path(tempfile.mkdtemp(prefix="ks-fleet-bench-"))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
            await run(args, root)
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            print(f"bench: {signal.Signals(signum).name}, stopping the daemons and servers", file=sys.stderr)
            scope.cancel()
            return


async def run(args, root: Path) -> None:
    servers_nodes = await start_servers(root, args.cluster)
    servers = [n.url for n in servers_nodes]
    op = Operator(servers)
    first_cancel: list[dict[int, float]] = [{}]
    try:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            sims: list[OxfunSim] = []
            keys: list[str] = []
            for i in range(args.instances):
                sim = await nursery.start(OxfunSim().serve)
                key, _ = sim.add_account(
                    f"bench-key-{i:03d}", f"bench-secret-{i:03d}", balances={"USD": "100000", "OX": "100000"}
                )

                def hook(t, tag, n, i=i):
                    first_cancel[-1].setdefault(i, time.perf_counter())

                sim.on_cancel_received = hook
                sims.append(sim)
                keys.append(key)
            await trio.to_thread.run_sync(op.bus.start)
            procs: list[DaemonProcess] = []
            envs: list[dict] = []
            t_start = time.perf_counter()
            for i, sim in enumerate(sims):
                env = {"BENCH_OX_KEY": keys[i], "BENCH_OX_SECRET": f"bench-secret-{i:03d}"}
                yaml_text = YAML.format(
                    servers=", ".join(servers),
                    instance=f"inst-{i:02d}",
                    replicas=3 if args.cluster else 1,
                    venues=ox_venue_yaml("ox", sim, "BENCH_OX"),
                )
                dp = await stack.enter_async_context(daemon_process(yaml_text, env, pin=False))
                procs.append(dp)
                envs.append(env)
            print("load average (1/5/15 min) at the start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
            print(
                f"{args.instances} instances ready in {time.perf_counter() - t_start:.1f}s "
                f"({'3-node cluster' if args.cluster else 'one nats-server'})",
                flush=True,
            )

            per_instance, slowest, all_tripped, all_flat = [], [], [], []
            for rnd in range(args.rounds + 1):  # round 0 warms up
                for i, sim in enumerate(sims):
                    await sim.place_orders(keys[i], market=OX_MARKET, side="BUY", price="50000", count=ORDERS)
                for dp in procs:
                    await dp.wait_status(
                        lambda st: sum(v["open_orders"] for v in st["venues"].values()) >= ORDERS, poll_s=0.01
                    )
                first_cancel.append({})
                fid, t0 = op.trip()
                with trio.fail_after(30):
                    while len(op.stamps(fid, "flat")) < len(procs) or len(first_cancel[-1]) < len(procs):
                        await trio.sleep(0.005)
                if rnd > 0:
                    lat = [t - t0 for t in first_cancel[-1].values()]
                    per_instance += lat
                    slowest.append(max(lat))
                    all_tripped.append(max(op.stamps(fid, "tripped").values()) - t0)
                    all_flat.append(max(op.stamps(fid, "flat").values()) - t0)
                op.reset()
                for dp in procs:
                    await dp.wait_status(lambda st: st["state"] == "armed", poll_s=0.01)

            restarts, restart_audit = [], []
            if args.restarts:
                fid, _ = op.trip()
                with trio.fail_after(30):
                    while len(op.stamps(fid, "tripped")) < len(procs):
                        await trio.sleep(0.01)
                for k in range(args.restarts):
                    spawn_s, audit_ms = await restart_to_tripped(procs[k % len(procs)], envs[k % len(procs)])
                    restarts.append(spawn_s)
                    if audit_ms is not None:
                        restart_audit.append(audit_ms / 1000)
                op.reset()

            ms = 1000.0
            print("fleet trip -> first cancel on the wire, per instance: "
                  + summarize(per_instance).fmt(scale=ms))
            print("fleet trip -> slowest instance's first cancel, per round: "
                  + summarize(slowest).fmt(scale=ms))
            print(f"fleet trip -> all {len(procs)} 'tripped' acks: {summarize(all_tripped).fmt(scale=ms)}")
            print(f"fleet trip -> all {len(procs)} 'flat' acks: {summarize(all_flat).fmt(scale=ms)}")
            if restarts:
                print("restart (kill -9, empty state dir) spawn -> ready TRIPPED: "
                      + summarize(restarts).fmt(scale=ms, digits=1))
                print(
                    f"  of which daemon_start -> fleet_trip (latch read, audit stamps): "
                    f"{summarize(restart_audit).fmt(scale=ms, digits=1)}"
                )
            print(f"operator bus: {op.bus.counters}")
            print("load average (1/5/15 min) at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
            print(reproduce_line())
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(op.bus.stop)
        for n in servers_nodes:
            n.kill()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--cluster", action="store_true", help="3-node JetStream cluster (latch R3)")
    trio.run(main, ap.parse_args())
