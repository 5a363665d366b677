"""A slow loss across three daemon restarts (SIGKILL, SIGTERM, watchdog-style SIGABRT) trips the
drawdown rule at exactly the configured threshold, measured from the true peak.

The real ``python -m killswitch run`` child process, the simulated OX.FUN exchange in the test
process, real sockets. Equity = 10000 OX + 1 BTC-USD-SWAP-LIN long from 100: mark m gives
equity 9900 + m. The peak is 11000 (mark 1100); 5% of it is 550, so equity 10450 trips and
10451 does not.
"""

from __future__ import annotations

import signal
import textwrap

import orjson
import trio

from killswitch.control import ControlClient
from killswitch.engine.rule_state import FILE_NAME
from killswitch.venues.oxfun.sim import OxfunSim
from tests.e2e.helpers import DaemonProcess, base_yaml, child_env, short_tmpdir

MARKET = "BTC-USD-SWAP-LIN"
OX_KEY = "ks-e2e-key-restarts"
OX_SECRET = "ks-e2e-secret-not-real-restarts"


def config_text(root, sim: OxfunSim) -> str:
    venues = textwrap.dedent(f"""\
        venues:
          - name: ox-main
            kind: oxfun
            api_key: {{env: KS_E2E_OX_KEY}}
            api_secret: {{env: KS_E2E_OX_SECRET}}
            ws_url: {sim.ws_url}
            rest_url: {sim.rest_url}
            markets: [{MARKET}]
            ping_interval: 2s
            pong_timeout: 2s
            request_timeout: 2s
            poll_interval: 1s
        """)
    rules = "rules:\n  - {name: dd, kind: drawdown, venues: [ox-main], max_drawdown: 5%}\n"
    return base_yaml(root, venues, rules)


async def test_drawdown_trips_at_exactly_the_threshold_from_the_true_peak_across_three_restarts():
    with trio.fail_after(90), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(OxfunSim().serve)
            sim.add_account(OX_KEY, OX_SECRET, balances={"OX": "10000"})
            await sim.set_positions(OX_KEY, {MARKET: {"qty": "1", "entry_price": "100"}})
            await sim.set_mark(MARKET, "100")
            cfg = root / "killswitch.yaml"
            cfg.write_text(config_text(root, sim))
            sock = root / "run" / "control.sock"
            state_file = root / "state" / FILE_NAME
            env = child_env(root, KS_E2E_OX_KEY=OX_KEY, KS_E2E_OX_SECRET=OX_SECRET)

            async def status() -> dict | None:
                try:
                    return await trio.to_thread.run_sync(lambda: ControlClient(sock).request({"op": "status"}))
                except Exception:
                    return None

            async def until_equity(value: str) -> dict:
                while True:
                    st = await status()
                    if st and st["venues"].get("ox-main", {}).get("equity") == value:
                        return st
                    await trio.sleep(0.05)

            async def until_stored_peak(value: str) -> None:
                while True:
                    try:
                        if f'"peak":"{value}"' in state_file.read_text():
                            return
                    except OSError:
                        pass
                    await trio.sleep(0.05)

            async def set_equity(value: int) -> dict:
                await sim.set_mark(MARKET, str(value - 9900))
                return await until_equity(str(value))

            proc = DaemonProcess(cfg, env, root / "daemon.log").start()
            try:
                await set_equity(10500)
                await set_equity(11000)  # the true peak
                await until_stored_peak("11000")
                await set_equity(10800)
                for signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGABRT):
                    proc.signal(signum)
                    await proc.wait_exit(10)
                    proc.kill()
                    # While it is down the loss goes on.
                    await sim.set_mark(MARKET, str(int(sim.marks[MARKET]) - 100))
                    proc = DaemonProcess(cfg, env, root / "daemon.log").start()
                    expected = str(9900 + int(sim.marks[MARKET]))
                    st = await until_equity(expected)
                    assert st["state"] == "armed", st
                    dd = next(r for r in st["rules"] if r["name"] == "dd")
                    assert "below peak 11000" in dd["observed"], dd  # the peak survived the restart
                # Now at 10500 (4.55% below 11000): one unit above the threshold, then exactly at it.
                st = await set_equity(10451)
                assert st["state"] == "armed", st
                await sim.set_mark(MARKET, str(10450 - 9900))
                while not ((st := await status()) and st["state"] == "tripped"):
                    await trio.sleep(0.05)
                trip = st["trips"][0]
                assert trip["rule"] == "dd"
                assert trip["observed"].startswith("-5.00% (550 below peak 11000"), trip
            except BaseException:
                print(proc.log_text()[-6000:])
                raise
            finally:
                proc.kill()
            audit = [orjson.loads(line) for line in (root / "state" / "audit.jsonl").read_bytes().splitlines()
                     if line.strip()]
            restored = [r for r in audit if r["event"] == "rule_state_restored"]
            assert len(restored) == 3 and all(r["peaks"] == {"ox-main": "11000"} for r in restored)
            nursery.cancel_scope.cancel()
