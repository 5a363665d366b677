"""The venue's dead-man's switch as a backstop: a real ``killswitch run`` keeps scheduleCancel
armed; SIGKILL it and the simulated venue cancels everything at T. And an account the venue
refuses (volume gate) is an alarm with the venue's own reason while the daemon keeps running."""

from __future__ import annotations

import signal
import textwrap
import time
from decimal import Decimal

import trio

from tests.e2e.helpers import DaemonProcess, base_yaml, child_env, short_tmpdir
from tests.integration.hyperliquid_fixtures import KS_AGENT_KEY, MASTER, start_sim

from .daemon_harness import daemon_yaml, running_daemon, wait_for

DMS_AFTER_S = 6  # the venue refuses less than 5 s ahead; the sim enforces the same minimum


def venue_yaml(sim, dms_after_s: int = DMS_AFTER_S) -> str:
    return textwrap.dedent(f"""\
        venues:
          - name: hl-main
            kind: hyperliquid
            private_key: {{env: KS_E2E_HL_KEY}}
            network: {sim.network}
            account_address: "{MASTER}"
            rest_url: {sim.rest_url}
            ws_url: {sim.ws_url}
            ping_interval: 1s
            poll_interval: 1s
            request_timeout: 2s
            dms_after: {dms_after_s}s
        """)


async def test_sigkilled_daemon_leaves_the_venue_to_cancel_everything_at_t():
    with trio.fail_after(45), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery)
            acct = sim.core.accounts[MASTER]
            sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=5)
            sim.place(MASTER, "ETH", is_buy=False, price="2000", size="0.1", reduce_only=True,
                      trigger={"isMarket": True, "triggerPx": "1900", "tpsl": "sl"})
            cfg = root / "killswitch.yaml"
            cfg.write_text(base_yaml(root, venue_yaml(sim)))
            proc = DaemonProcess(cfg, child_env(root, KS_E2E_HL_KEY=KS_AGENT_KEY), root / "daemon.log").start()
            try:
                # armed, then refreshed at least once (the firing time moves out)
                while acct.dms_time_ms is None:
                    await trio.sleep(0.05)
                first = acct.dms_time_ms
                while acct.dms_time_ms == first:
                    await trio.sleep(0.05)
                armed_at = acct.dms_time_ms
                proc.signal(signal.SIGKILL)
                assert await proc.wait_exit(5) == -signal.SIGKILL
                killed_ms = int(time.time() * 1000)
                assert len(acct.orders) == 6  # nothing cancelled the orders yet
                while acct.orders:
                    await trio.sleep(0.05)
                fired_ms = int(time.time() * 1000)
            except BaseException:
                print(proc.log_text()[-6000:])
                raise
            finally:
                proc.kill()
            nursery.cancel_scope.cancel()
    assert fired_ms >= armed_at > killed_ms - DMS_AFTER_S * 1000
    assert fired_ms - killed_ms <= DMS_AFTER_S * 1000 + 1000  # at T (<= T after the kill)
    assert {h[1] for h in acct.history.values()} == {"scheduledCancel"}  # the venue did it, triggers too
    assert acct.dms_fired_today == 1


async def test_volume_gate_refusal_is_an_alarm_and_the_daemon_keeps_guarding(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery)
            sim.core.accounts[MASTER].cum_vlm = Decimal("373.47205")
            venues = textwrap.indent(venue_yaml(sim).split("venues:\n", 1)[1], "")
            text = daemon_yaml(tmp_path, venues, "  - {name: max-open, kind: max_open_orders, max: 3}\n")
            async with running_daemon(tmp_path, text, {"KS_E2E_HL_KEY": KS_AGENT_KEY}) as d:
                key = "venue_dms_unavailable:hl-main"
                await wait_for(lambda: key in d.engine.alarms)
                assert d.engine.alarms[key].endswith(
                    "Cannot set scheduled cancel time until enough volume traded. Required: $1000000. "
                    "Traded: $373.47205.")
                st = d.engine.status()["venues"]["hl-main"]["backstop"]
                assert st["armed"] is False and "Required: $1000000" in st["unavailable_reason"]
                from killswitch.control import render_status
                from killswitch.metrics import DaemonCollector
                assert "hl-main: venue dead-man's switch NOT ARMED (Cannot set" in render_status(d.engine.status())
                gauges = {m.name: m for m in DaemonCollector(d).collect()}
                assert [s.value for s in gauges["killswitch_venue_dms_armed"].samples] == [0]
                # still guarding: a breach trips and cancels
                sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=4)
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: not sim.core.accounts[MASTER].orders and d.engine.all_flat())
            nursery.cancel_scope.cancel()
