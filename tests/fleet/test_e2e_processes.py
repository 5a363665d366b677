"""End to end: real ``killswitch run`` processes (each with its own OX.FUN simulator, in this
test process on 127.0.0.1) on a real 3-node JetStream cluster, driven by the real CLI.

``trip --fleet`` -> every simulator flat; ``kill -9`` an instance while the fleet is tripped and
restart it with an empty state dir -> TRIPPED and flat; ``reset --fleet`` -> all ARMED, each
audited."""

from __future__ import annotations

import shutil
import signal
import sys
import textwrap

import nats
import trio

from killswitch.audit import read_audit
from killswitch.control import ControlClient, ControlError
from killswitch.fleet.operator import load_fleet_section, read_statuses
from killswitch.fleet.subjects import Subjects
from tests.e2e.helpers import REPO, DaemonProcess, base_yaml, child_env, short_tmpdir
from tests.fleet.world import (
    MARKET,
    OX_KEY,
    OX_SECRET,
    RULES,
    fleet_yaml,
    in_asyncio,
    sims,
    until,
    venue_yaml,
)

N = 2


class Proc:
    def __init__(self, name, root, sim, servers):
        self.name, self.root, self.sim = name, root, sim
        root.mkdir(parents=True)
        (root / "killswitch.yaml").write_text(
            fleet_yaml(servers, name, extra="latch_replicas: 3\n") + base_yaml(root, venue_yaml(sim), RULES)
        )
        self.proc: DaemonProcess | None = None

    def start(self) -> None:
        env = child_env(self.root, KS_FLEET_OX_KEY=OX_KEY, KS_FLEET_OX_SECRET=OX_SECRET)
        self.proc = DaemonProcess(self.root / "killswitch.yaml", env, self.root / "daemon.log").start()

    def status(self) -> dict | None:
        try:
            return ControlClient(self.root / "run" / "control.sock", timeout_s=2).request({"op": "status"})
        except (ControlError, OSError):
            return None

    async def until_status(self, pred) -> dict:
        while True:
            st = await trio.to_thread.run_sync(self.status)
            if st is not None and st.get("ok", True) and pred(st):
                return st
            await trio.sleep(0.05)

    def open_orders(self) -> int:
        return len(self.sim.open_orders(OX_KEY))

    def audit_events(self, event: str) -> list[dict]:
        return [r for r in read_audit(self.root / "state" / "audit.jsonl") if r.get("event") == event]

    async def events(self, event: str, n: int = 1) -> list[dict]:
        """The ``event`` records once there are ``n`` (the daemon writes its audit log shortly after)."""
        while len(found := self.audit_events(event)) < n:
            await trio.sleep(0.02)
        return found


async def cli(root, *args: str):
    res = await trio.run_process(
        [sys.executable, "-m", "killswitch", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=REPO,
        env=child_env(root),
    )
    return res.returncode, res.stdout.decode(), res.stderr.decode()


def ready_on_bus(st: dict) -> bool:
    return st.get("ready") and st.get("fleet", {}).get("bus") == "up"


async def test_trip_fleet_kill_9_restart_empty_state_and_reset_fleet_with_real_processes(nats_cluster):
    servers = [n.url for n in nats_cluster]
    with trio.fail_after(90), short_tmpdir() as root:
        op = root / "operator.yaml"
        op.write_text(
            textwrap.dedent(f"""\
            fleet:
              servers: [{", ".join(servers)}]
              name: test
              latch_replicas: 3
              silent_after: 1s
            """)
        )
        async with sims(N) as sim_list:
            procs = [Proc(f"host-{i}", root / f"i{i}", sim, servers) for i, sim in enumerate(sim_list)]
            try:
                for p in procs:
                    await p.sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=3)
                    p.start()
                for p in procs:
                    await p.until_status(ready_on_bus)
                # The status bucket has every instance before the operator trips (so it expects them all).
                cfg = load_fleet_section(op)

                async def listed() -> set[str]:
                    nc = await nats.connect(servers)
                    try:
                        seen = await read_statuses(nc.jetstream(), Subjects("test"), 5.0)
                    finally:
                        await nc.close()
                    return {s.status.instance for s in seen}

                while await in_asyncio(listed) != {p.name for p in procs}:
                    await trio.sleep(0.05)
                assert cfg.name == "test"

                code, out, err = await cli(
                    root,
                    "trip",
                    "--fleet",
                    "-c",
                    str(op),
                    "--reason",
                    "e2e desk kill",
                    "--operator",
                    "risk-anna",
                    "--deadline",
                    "15",
                )
                assert code == 0, out + err
                for p in procs:
                    assert any(line.startswith(p.name) and " flat " in line for line in out.splitlines()), out
                    assert p.open_orders() == 0
                    st = await p.until_status(lambda s: True)
                    assert st["state"] == "tripped" and st["trips"][-1]["source"] == "fleet"

                # kill -9 one instance, lose its state dir, a strategy keeps placing orders.
                victim = procs[-1]
                victim.proc.signal(signal.SIGKILL)
                assert await victim.proc.wait_exit(5) == -signal.SIGKILL
                victim.proc.kill()
                shutil.rmtree(victim.root / "state")
                await victim.sim.place_orders(OX_KEY, market=MARKET, side="SELL", price="70000", count=4)
                t0 = trio.current_time()
                victim.start()
                st = await victim.until_status(lambda s: s.get("ready"))
                assert st["state"] == "tripped", st  # READY already TRIPPED, from the fleet latch
                await until(lambda: victim.open_orders() == 0)
                print(f"restart -> ready TRIPPED and flat: {trio.current_time() - t0:.2f}s")
                assert (await victim.events("fleet_trip"))[0]["via"] == "latch"

                code, out, err = await cli(root, "status", "--fleet", "-c", str(op))
                assert code == 0 and "TRIPPED" in out, out + err
                # The daemon's own status names its fleet and bus.
                sock = str(victim.root / "run" / "control.sock")
                code, out, err = await cli(root, "status", "--socket", sock)
                assert code == 0 and f"fleet test as {victim.name}: bus up" in out, out + err

                code, out, err = await cli(
                    root,
                    "reset",
                    "--fleet",
                    "-c",
                    str(op),
                    "--operator",
                    "risk-bob",
                    "--reason",
                    "all clear",
                    "--deadline",
                    "15",
                )
                assert code == 0, out + err
                for p in procs:
                    st = await p.until_status(lambda s: s["state"] == "armed")
                    assert [r["operator"] for r in await p.events("fleet_reset")] == ["risk-bob"]
                    resets = await p.events("reset")
                    assert resets[-1]["source"] == "fleet"
            except BaseException:
                for p in procs:
                    print(f"--- {p.name} log:\n{p.proc.log_text()[-4000:] if p.proc else ''}")
                raise
            finally:
                for p in procs:
                    if p.proc is not None:
                        p.proc.kill()
