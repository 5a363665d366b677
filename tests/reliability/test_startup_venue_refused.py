"""One venue refusing the credentials at start-up does not stop protection for the others:
the daemon becomes READY with ``STATUS=degraded: <venue> credentials refused (code ...)``,
guards the venues that work (a trip empties their books at the simulator), alarms with the
venue's own error code, retries the refused one with capped backoff, and takes it under
protection as soon as the venue accepts the credentials. ``require_all_venues: true`` makes
the refusal fatal instead (exit 3)."""

from __future__ import annotations

import signal

import trio

from killswitch.control import ControlClient
from killswitch.daemon import EXIT_AUTH, Daemon
from killswitch.config import load_config_text
from tests.e2e.helpers import DaemonProcess, NotifyReader, child_env, short_tmpdir

from .harness import OxWorld, daemon_yaml, start_ox, wait_for

WRONG_SECRET = "not-the-secret-of-this-key-0001"


async def test_refused_venue_degrades_ready_guards_the_others_and_is_retried_until_accepted():
    with short_tmpdir() as root, trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            good = await start_ox(nursery)
            key2, secret2 = good.sim.add_account(balances={"OX": "1000"})
            bad = OxWorld(good.sim, key2, WRONG_SECRET, env_prefix="RL_OXB")
            await good.place(3)
            await bad.place(2)
            cfg = root / "killswitch.yaml"
            cfg.write_text(daemon_yaml(root, good.venue_yaml() + bad.venue_yaml(name="ox-bad")))
            notify = NotifyReader(root / "notify.sock")
            env = child_env(root, NOTIFY_SOCKET=str(notify.path), **good.env(), **bad.env())
            proc = DaemonProcess(cfg, env, root / "daemon.log").start()
            try:
                msg = await notify.wait_for("READY", "1")
                assert "degraded: ox-bad credentials refused (code 20000)" in msg["STATUS"], msg
                st = await trio.to_thread.run_sync(lambda: ControlClient(root / "control.sock").request(
                    {"op": "status"}))
                assert st["venues"]["ox-main"]["connected"] and st["venues"]["ox-main"]["open_orders"] == 3
                assert st["venues"]["ox-bad"]["credentials_refused"] == "20000"
                assert "20000" in st["alarms"]["auth:ox-bad"]
                assert WRONG_SECRET not in str(st)

                # The venue that works is guarded: a trip empties its book at the venue.
                proc.signal(signal.SIGUSR1)
                await wait_for(lambda: not good.open_orders(), step_s=0.02)
                # The refused one is retried (backoff 1 s, 2 s, ...).
                await wait_for(lambda: good.sim.accounts[key2].counters.logins_failed >= 3, step_s=0.05)
                assert len(bad.open_orders()) == 2

                # The operator fixes the secret at the venue: the next retry gets in, and the
                # latched trip sweeps that account too.
                good.sim.accounts[key2].api_secret = WRONG_SECRET
                await wait_for(lambda: not bad.open_orders(), step_s=0.05)
                msg = await notify.wait_for("STATUS", contains="ox-bad:up")
                st = await trio.to_thread.run_sync(lambda: ControlClient(root / "control.sock").request(
                    {"op": "status"}))
                assert "auth:ox-bad" not in st["alarms"] and st["venues"]["ox-bad"]["credentials_refused"] is None
                proc.signal(signal.SIGTERM)
                assert await proc.wait_exit(10) == 0
            except BaseException:
                print(proc.log_text()[-6000:])
                raise
            finally:
                proc.kill()
                notify.close()
            log_text = proc.log_text()
            assert WRONG_SECRET not in log_text and secret2 not in log_text
            assert "venue_credentials_refused" in log_text
            nursery.cancel_scope.cancel()


async def test_require_all_venues_makes_a_refused_venue_fatal(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            good = await start_ox(nursery)
            text = daemon_yaml(tmp_path, good.venue_yaml()).replace(
                "  log_format: json\n", "  log_format: json\n  require_all_venues: true\n")
            d = Daemon(load_config_text(text, str(tmp_path / "k.yaml")),
                       environ={"RL_OX_KEY": good.key, "RL_OX_SECRET": WRONG_SECRET}, handle_signals=False)
            assert await d.run() == EXIT_AUTH
            assert "20000" in str(d.fatal)
            nursery.cancel_scope.cancel()
