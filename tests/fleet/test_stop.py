"""SIGTERM ends a fleet daemon within 2 s when no NATS server can be reached: while the
fleet service waits for its first latch read at start-up, and once it is up without a bus.

A real ``killswitch run`` process with its own OX.FUN simulator; the fleet's servers are
127.0.0.1 ports nothing listens on (connection refused on every attempt)."""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest
import trio

from tests.e2e.helpers import DaemonProcess, base_yaml, child_env, short_tmpdir
from tests.fleet.world import OX_KEY, OX_SECRET, RULES, fleet_yaml, sims, until, venue_yaml

STOP_BOUND_S = 2.0


def dead_port() -> int:
    """A loopback port that was free a moment ago: connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events(proc: DaemonProcess) -> list[str]:
    out = []
    for line in proc.log_text().splitlines():
        try:
            out.append(json.loads(line).get("event", ""))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("when", ["waiting_for_the_fleet_latch", "ready_without_a_bus"])
async def test_sigterm_stops_a_fleet_daemon_without_a_reachable_bus_within_2s(when):
    with trio.fail_after(60), short_tmpdir() as root:
        async with sims(1) as (sim,):
            servers = [f"nats://127.0.0.1:{dead_port()}", f"nats://127.0.0.1:{dead_port()}"]
            cfg = root / "killswitch.yaml"
            cfg.write_text(fleet_yaml(servers, "solo") + base_yaml(root, venue_yaml(sim), RULES))
            env = child_env(root, KS_FLEET_OX_KEY=OX_KEY, KS_FLEET_OX_SECRET=OX_SECRET)
            proc = DaemonProcess(cfg, env, root / "daemon.log").start()
            try:
                if when == "waiting_for_the_fleet_latch":
                    # The control socket is up: the fleet service (started next) is in its start-up latch wait.
                    await until(lambda: proc.proc.poll() is not None or "control_listening" in events(proc),
                                step_s=0.005)
                    assert "fleet_latch_unknown_at_start" not in events(proc), "too late to test the wait"
                else:
                    await until(lambda: proc.proc.poll() is not None or "ready" in events(proc))
                assert proc.proc.poll() is None, proc.log_text()
                t0 = time.monotonic()
                proc.signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    while proc.proc.poll() is None:
                        await trio.sleep(0.01)
                took_s = time.monotonic() - t0
                print(f"{when}: exit {took_s:.3f}s after SIGTERM")
                assert proc.proc.poll() is not None, f"still running 15 s after SIGTERM:\n{proc.log_text()[-3000:]}"
                assert proc.proc.returncode == 0, proc.log_text()[-3000:]
                assert took_s <= STOP_BOUND_S, f"exit took {took_s:.2f}s after SIGTERM ({when})"
            finally:
                proc.kill()
