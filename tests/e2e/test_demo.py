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


VENUES = {"ox-demo", "nado-demo", "hl-demo"}


def test_demo_json_every_act_flat_and_hyperliquid_backstop_armed():
    res = _run_demo("--json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads(res.stdout)  # stdout carries exactly one JSON object
    assert summary["ok"] is True
    acts = summary["acts"]
    assert [a["act"] for a in acts] == ["drawdown", "silent", "runaway", "hl-runaway"]
    expected_rules = {"drawdown": "demo-drawdown", "silent": "demo-strategy-alive", "runaway": "demo-order-rate",
                      "hl-runaway": "demo-order-rate"}
    for act in acts:
        assert act["rule"] == expected_rules[act["act"]], act
        assert act["flat"] is True, act
        assert set(act["sim_open_orders"].values()) == {0}, act  # the simulators' own books
        assert act["trip_to_first_cancel_ms"] is not None and act["trip_to_first_cancel_ms"] > 0
        assert act["trip_to_flat_ms"] is not None and act["trip_to_flat_ms"] >= act["trip_to_first_cancel_ms"]
        assert set(act["per_venue_ms"]) == VENUES
        assert set(act["sim_open_orders"]) == VENUES
        assert all(n > 0 for n in act["cancelled"].values()) and set(act["cancelled"]) == VENUES
    assert acts[2]["swept"] > 0  # the runaway kept sending after the trip
    hl_act = acts[3]
    assert hl_act["observed"].endswith("on hl-demo"), hl_act  # tripped by the Hyperliquid runaway itself
    # Its quotes, its resting stop trigger and the flood: more than the other venues' 3 quotes each,
    # and the Hyperliquid simulator's own book (resting + trigger orders) ends empty.
    assert hl_act["cancelled"]["hl-demo"] > hl_act["cancelled"]["ox-demo"], hl_act
    assert hl_act["sim_open_orders"]["hl-demo"] == 0 and hl_act["swept"] > 0
    # The Hyperliquid venue's own dead-man's switch, armed before the acts and still after.
    for key in ("backstop", "backstop_after_acts"):
        bs = summary[key]
        assert bs["venue"] == "hl-demo" and bs["armed"] is True, bs
        # The daemon's view matches the simulator's own scheduleCancel time (dms_after: 60s).
        assert bs["fires_at_ms"] is not None and bs["fires_at_ms"] == bs["sim_fires_at_ms"], bs
        assert 0 < bs["fires_in_s"] <= 60, bs
    assert summary["backstop"]["fires_in_s"] >= 50  # armed just before the acts, at now + 60 s


def test_demo_human_output_shows_trips():
    res = _run_demo()
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    for rule in ("demo-drawdown", "demo-strategy-alive", "demo-order-rate"):
        assert f"rule {rule} [" in out
    assert out.count("trip -> first cancel on the wire:") == 4
    assert out.count("-> FLAT") == 4
    assert "Act 4 - the strategy runs away on Hyperliquid" in out
    assert "on hl-demo (threshold" in out  # act 4's trip names the Hyperliquid venue
    assert "hl-demo backstop ARMED" in out and "UTC (in " in out
    assert "hl-demo backstop after the acts: still ARMED" in out
    assert "RESET --rebase by operator 'demo'" in out
    assert "audit log:" in out
    assert "every act ended FLAT" in out
    # The daemon's JSON logs go to a file, never to the terminal.
    assert '"event"' not in out
