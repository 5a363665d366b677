"""`killswitch demo` end to end, as a user runs it: a subprocess, loopback only."""

from __future__ import annotations

import json
import subprocess
import sys

DEMO_TIMEOUT_S = 120


def _run_demo(*extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "killswitch", "demo", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_demo_json_every_act_flat():
    res = _run_demo("--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads(res.stdout)  # stdout carries exactly one JSON object
    assert summary["ok"] is True
    acts = summary["acts"]
    assert [a["act"] for a in acts] == ["drawdown", "silent", "runaway"]
    expected_rules = {"drawdown": "demo-drawdown", "silent": "demo-strategy-alive", "runaway": "demo-order-rate"}
    for act in acts:
        assert act["rule"] == expected_rules[act["act"]], act
        assert act["flat"] is True, act
        assert set(act["sim_open_orders"].values()) == {0}, act  # the simulators' own books
        assert act["trip_to_first_cancel_ms"] is not None and act["trip_to_first_cancel_ms"] > 0
        assert act["trip_to_flat_ms"] is not None and act["trip_to_flat_ms"] >= act["trip_to_first_cancel_ms"]
        assert set(act["per_venue_ms"]) == {"ox-demo", "nado-demo"}
        assert all(n > 0 for n in act["cancelled"].values()) and set(act["cancelled"]) == {"ox-demo", "nado-demo"}
    assert acts[2]["swept"] > 0  # the runaway kept sending after the trip


def test_demo_human_output_shows_trips():
    res = _run_demo()
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    for rule in ("demo-drawdown", "demo-strategy-alive", "demo-order-rate"):
        assert f"rule {rule} [" in out
    assert out.count("trip -> first cancel on the wire:") == 3
    assert out.count("-> FLAT") == 3
    assert "RESET --rebase by operator 'demo'" in out
    assert "audit log:" in out
    assert "every act ended FLAT" in out
    # The daemon's JSON logs go to a file, never to the terminal.
    assert '"event"' not in out
