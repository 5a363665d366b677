"""The real thing: ``python -m killswitch run -c CONFIG`` as a child process, a test
``$NOTIFY_SOCKET`` with ``$WATCHDOG_USEC``, real signals, and the simulated OX.FUN exchange
running in the test process on 127.0.0.1.

Every wait is on a condition (a notify datagram, the sim's order book, a control reply), under
``trio.fail_after``; the child is always SIGKILLed in ``finally``.
"""

from __future__ import annotations

import signal
import sys
import textwrap

import orjson
import trio

from killswitch.control import ControlClient
from killswitch.engine.latch import LATCH_FILE
from killswitch.venues.oxfun.sim import OxfunSim
from tests.e2e.helpers import REPO, DaemonProcess, NotifyReader, base_yaml, child_env, short_tmpdir

MARKET = "BTC-USD-SWAP-LIN"
OX_KEY = "ks-e2e-key-0001"
OX_SECRET = "ks-e2e-secret-not-real-0001"
WATCHDOG_USEC = 1_000_000  # 1 s: pings every 0.5 s


def venue_yaml(sim: OxfunSim) -> str:
    return textwrap.dedent(f"""\
        venues:
          - name: ox-main
            kind: oxfun
            api_key: {{env: KS_E2E_OX_KEY}}
            api_secret: {{env: KS_E2E_OX_SECRET}}
            ws_url: {sim.ws_url}
            rest_url: {sim.rest_url}
            markets: [{MARKET}]
            equity_currency: USD
            ping_interval: 2s
            pong_timeout: 2s
            request_timeout: 2s
            poll_interval: 1s
        """)


RULES = "rules:\n  - {name: max-open, kind: max_open_orders, max: 1000}\n"
RULES_WITH_NEW = RULES + "  - {name: new-open-limit, kind: max_open_orders, max: 500}\n"
BROKEN_RULES = "rules:\n  - {name: max-open, kind: max_open_orders, max: lots}\n"


class World:
    def __init__(self, root, sim: OxfunSim) -> None:
        self.root = root
        self.sim = sim
        self.config = root / "killswitch.yaml"
        self.socket = root / "run" / "control.sock"
        self.notify = NotifyReader(root / "notify.sock")

    def write_config(self, rules: str = RULES) -> None:
        self.config.write_text(base_yaml(self.root, venue_yaml(self.sim), rules))

    def process(self, **env: str) -> DaemonProcess:
        environ = child_env(self.root, NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC=str(WATCHDOG_USEC),
                            KS_E2E_OX_KEY=OX_KEY, KS_E2E_OX_SECRET=OX_SECRET, **env)
        return DaemonProcess(self.config, environ, self.root / "daemon.log").start()

    def open_orders(self) -> int:
        return len(self.sim.open_orders(OX_KEY))

    def subscribed(self) -> bool:
        return any(c.account is not None and c.subs for c in self.sim._conns.values())

    async def control(self, req: dict) -> dict:
        return await trio.to_thread.run_sync(lambda: ControlClient(self.socket).request(req))

    async def until(self, predicate, step_s: float = 0.02) -> None:
        while not predicate():
            await trio.sleep(step_s)

    def latch(self) -> dict:
        return orjson.loads((self.root / "state" / LATCH_FILE).read_bytes())


async def with_world(body) -> None:
    with short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(OxfunSim().serve)
            sim.add_account(OX_KEY, OX_SECRET, balances={"USD": "100000", "OX": "100000"})
            world = World(root, sim)
            try:
                await body(world)
            finally:
                world.notify.close()
                nursery.cancel_scope.cancel()


def _fail_with_log(proc: DaemonProcess):
    return f"daemon log:\n{proc.log_text()[-6000:]}"


async def test_ready_watchdog_reload_sigusr1_sweep_and_sigterm():
    async def body(w: World) -> None:
        await w.sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=3)
        w.write_config()
        proc = w.process()
        try:
            msg = await w.notify.wait_for("READY", "1")
            # READY only once the venue is logged in, subscribed and reconciled.
            assert w.subscribed(), "READY before the session subscribed"
            assert msg["STATUS"].startswith("ARMED") and "ox-main:up/3" in msg["STATUS"], msg
            st = await w.control({"op": "status"})
            assert st["ready"] and st["venues"]["ox-main"]["connected"] and st["venues"]["ox-main"]["open_orders"] == 3
            assert st["pid"] == proc.pid

            # The watchdog keeps coming while the engine runs.
            for _ in range(3):
                await w.notify.wait_for("WATCHDOG", "1")

            # SIGHUP with a broken config: the old one keeps running, and it says so.
            w.write_config(BROKEN_RULES)
            proc.signal(signal.SIGHUP)
            await w.notify.wait_for("RELOADING", "1")
            msg = await w.notify.wait_for("READY", "1")
            assert "reload failed" in msg["STATUS"]
            st = await w.control({"op": "status"})
            assert st["reload_errors"] and any("max" in e for e in st["reload_errors"])
            assert [r["name"] for r in st["rules"]] == ["max-open"]

            # SIGHUP with a valid config adding a rule: applied.
            w.write_config(RULES_WITH_NEW)
            proc.signal(signal.SIGHUP)
            await w.notify.wait_for("RELOADING", "1")
            msg = await w.notify.wait_for("READY", "1")
            assert "reload failed" not in msg["STATUS"]
            with trio.fail_after(5):
                while "new-open-limit" not in [r["name"] for r in (await w.control({"op": "status"}))["rules"]]:
                    await trio.sleep(0.02)

            # SIGUSR1 trips; the sim shows every order cancelled.
            proc.signal(signal.SIGUSR1)
            await w.notify.wait_for("STATUS", contains="TRIPPED")
            await w.until(lambda: w.open_orders() == 0)
            # A runaway strategy places more while TRIPPED: swept.
            await w.sim.place_orders(OX_KEY, market=MARKET, side="SELL", price="70000", count=2)
            await w.until(lambda: w.open_orders() == 0)
            st = await w.control({"op": "status"})
            assert st["state"] == "tripped" and st["trips"][0]["source"] == "signal"
            assert st["counters"]["sweeps"] >= 1

            # SIGTERM: clean exit 0, STOPPING=1, latch persisted as TRIPPED.
            proc.signal(signal.SIGTERM)
            await w.notify.wait_for("STOPPING", "1")
            assert await proc.wait_exit(15) == 0, _fail_with_log(proc)
            assert w.latch()["state"] == "tripped"
            assert not w.socket.exists()
        except BaseException:
            print(_fail_with_log(proc))
            raise
        finally:
            proc.kill()

    with trio.fail_after(45):
        await with_world(body)


async def test_kill_9_restart_comes_back_tripped_and_sweeps():
    async def body(w: World) -> None:
        w.write_config()
        await w.sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="50000", count=2)
        proc = w.process()
        try:
            await w.notify.wait_for("READY", "1")
            # Trip through the real CLI.
            res = await trio.run_process(
                [sys.executable, "-m", "killswitch", "trip", "--socket", str(w.socket), "--reason", "e2e test",
                 "--operator", "tester"], capture_stdout=True, capture_stderr=True, check=False, cwd=REPO,
                env=child_env(w.root))
            assert res.returncode == 0, res.stderr.decode()
            assert res.stdout.decode().startswith("TRIPPED: trip #1")
            await w.until(lambda: w.open_orders() == 0)
            proc.signal(signal.SIGKILL)
            assert await proc.wait_exit(5) == -signal.SIGKILL
        finally:
            proc.kill()

        # While the daemon is down, a strategy places orders.
        await w.sim.place_orders(OX_KEY, market=MARKET, side="BUY", price="49000", count=4)
        assert w.open_orders() == 4
        assert w.latch()["state"] == "tripped"

        proc = w.process()
        try:
            msg = await w.notify.wait_for("READY", "1")
            assert msg["STATUS"].startswith("TRIPPED"), msg
            await w.until(lambda: w.open_orders() == 0)
            st = await w.control({"op": "status"})
            assert st["state"] == "tripped" and st["trips"][0]["reason"] == "e2e test"
            res = await trio.run_process(
                [sys.executable, "-m", "killswitch", "status", "--socket", str(w.socket)],
                capture_stdout=True, check=False, cwd=REPO, env=child_env(w.root))
            assert res.returncode == 0 and "killswitch: TRIPPED" in res.stdout.decode()
        except BaseException:
            print(_fail_with_log(proc))
            raise
        finally:
            proc.kill()

    with trio.fail_after(45):
        await with_world(body)


async def test_wedged_engine_stops_the_watchdog():
    async def body(w: World) -> None:
        w.write_config()
        proc = w.process(KILLSWITCH_ENABLE_DEBUG_OPS="1")
        wedge_s = 2.5
        try:
            await w.notify.wait_for("READY", "1")
            await w.notify.wait_for("WATCHDOG", "1")
            reply = await w.control({"op": "debug_wedge", "seconds": wedge_s})
            assert reply == {"ok": True, "wedge_s": wedge_s}
            sent_at = trio.current_time()
            # Read until well after the wedge ends; the biggest gap between pings shows the wedge.
            while trio.current_time() - sent_at < wedge_s + 1.5:
                await w.notify.next()
            pings = [t for t, m in w.notify.messages if m.get("WATCHDOG") == "1"]
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            assert gaps and max(gaps) >= wedge_s - 0.5, gaps  # no ping while wedged (> 1 s interval)
            assert pings[-1] - sent_at > wedge_s  # and pings resumed once it made progress again
        except BaseException:
            print(_fail_with_log(proc))
            raise
        finally:
            proc.kill()

    with trio.fail_after(30):
        await with_world(body)


async def test_cli_reports_daemon_not_running():
    with trio.fail_after(10), short_tmpdir() as root:
        res = await trio.run_process(
            [sys.executable, "-m", "killswitch", "status", "--socket", str(root / "nope.sock")],
            capture_stdout=True, capture_stderr=True, check=False, cwd=REPO, env=child_env(root))
        assert res.returncode == 1 and "not running" in res.stderr.decode()
