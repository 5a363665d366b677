"""The operator's view: --version, a trip's scope/operator/reason in status, colours only on a
terminal (and never with NO_COLOR), --watch refreshing, and the versioned status JSON."""

from __future__ import annotations

import io
import subprocess
import sys

import orjson
import trio

import killswitch
from killswitch.control import AsyncControlClient, control_service
from killswitch.control.protocol import STATUS_VERSION
from killswitch.control.render import render_status, scope_text, use_colour
from killswitch.control.watch import CLEAR_HOME, watch_status
from killswitch.engine.latch import LATCH_FILE, latch_from_bytes
from tests.component.fakes import FakeSession
from tests.e2e.helpers import REPO, inprocess_daemon, short_tmpdir

ESC = "\x1b["

TRIPPED = {
    "ok": True, "state": "tripped", "ready": True, "pid": 1,
    "trips": [{"trip_id": 3, "rule": "manual", "kind": "manual", "reason": "strategy misbehaving",
               "operator": "alice", "observed": "manual trip via control", "threshold": "-", "source": "control",
               "ts_wall_ms": 1_796_171_755_395,
               "scope": {"venues": ["ox-a"], "products": ["BTC-USD-SWAP-LIN"], "sides": None,
                         "keep_protective_stops": True, "by_id_only": False}}],
    "venues": {"ox-a": {"connected": False, "open_orders": 0, "cancel_state": "cancelling"}},
    "rules": [{"name": "max-open", "kind": "max_open_orders", "observed": "0 open", "threshold": "10",
               "breached": True, "latch": True}],
    "alarms": {"unverified:ox-a": "ox-a: cannot confirm open orders"},
    "counters": {},
}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_version_flag_prints_the_package_version():
    out = subprocess.run([sys.executable, "-m", "killswitch", "--version"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip() == f"killswitch {killswitch.__version__}"


def test_status_shows_a_trips_scope_operator_and_reason():
    text = render_status(TRIPPED)
    assert ("#3 reason: strategy misbehaving; operator: alice; scope: venues ox-a; "
            "products BTC-USD-SWAP-LIN; protective stops kept") in text
    assert scope_text({"venues": None, "products": None, "sides": None}) == "everything"


def test_colour_only_on_a_terminal_and_never_with_no_color():
    assert use_colour(Tty(), {}) is True
    assert use_colour(Tty(), {"NO_COLOR": "1"}) is False
    assert use_colour(Tty(), {"TERM": "dumb"}) is False
    assert use_colour(io.StringIO(), {}) is False  # piped

    plain, coloured = render_status(TRIPPED), render_status(TRIPPED, colour=True)
    assert ESC not in plain
    assert "\x1b[1m\x1b[31mTRIPPED" in coloured  # bold red banner
    assert "\x1b[31m  ox-a" in coloured  # the DOWN venue's row
    assert "\x1b[1m\x1b[31mALARMS (1):" in coloured
    # Colour never changes the text itself.
    assert coloured.replace("\x1b[1m", "").replace("\x1b[31m", "").replace("\x1b[32m", "").replace(
        "\x1b[33m", "").replace("\x1b[0m", "") == plain


def test_watch_redraws_in_place_on_a_terminal_and_survives_the_daemon_going_away():
    replies = [TRIPPED, OSError("killswitch is not running"), {**TRIPPED, "state": "armed", "trips": []}]

    def fetch():
        r = replies.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    out, sleeps = Tty(), []
    assert watch_status(fetch, out=out, interval_s=0.5, count=3, sleep=sleeps.append) == 0
    frames = out.getvalue().split(CLEAR_HOME)[1:]
    assert len(frames) == 3 and sleeps == [0.5, 0.5]
    assert "TRIPPED" in frames[0] and "not running" in frames[1] and "ARMED" in frames[2]

    piped = io.StringIO()
    watch_status(lambda: TRIPPED, out=piped, count=2, sleep=lambda s: None)
    assert CLEAR_HOME not in piped.getvalue() and piped.getvalue().count("(Ctrl-C to stop)") == 2

    lines = io.StringIO()
    watch_status(lambda: TRIPPED, out=lines, count=2, json_lines=True, sleep=lambda s: None)
    assert [orjson.loads(x)["state"] for x in lines.getvalue().splitlines()] == ["tripped", "tripped"]


async def test_status_json_is_versioned_and_carries_the_operator_of_a_manual_trip():
    with trio.fail_after(20), short_tmpdir() as root:
        session = FakeSession("ox-a")
        session.add("BTC-USD-SWAP-LIN", 2)
        async with inprocess_daemon(root, [session], [control_service]) as daemon:
            path = daemon.config.daemon.control_socket
            async with AsyncControlClient(path) as client:
                st = await client.request({"op": "status"})
                assert st["status_version"] == STATUS_VERSION == 1
                reply = await client.request({"op": "trip", "reason": "rehearsal", "operator": "alice",
                                              "venues": ["ox-a"]})
                assert reply["ok"], reply
                st = await client.request({"op": "status"})
            trip = st["trips"][0]
            assert trip["operator"] == "alice" and trip["reason"] == "rehearsal"
            assert trip["scope"]["venues"] == ["ox-a"]
            # The CLI, as an operator runs it: two refreshes of the real status, piped.
            proc = await trio.run_process(
                [sys.executable, "-m", "killswitch", "status", "--socket", str(path), "--watch", "--count", "2",
                 "--interval", "0.1"], capture_stdout=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "NO_COLOR": ""})
            out = proc.stdout.decode()
            assert out.count("killswitch: TRIPPED") == 2 and ESC not in out
            assert "operator: alice; scope: venues ox-a" in out
            # The operator survives a restart: it is in the persisted latch.
            while not (daemon.config.daemon.state_dir / LATCH_FILE).exists():
                await trio.sleep(0.01)
            while not latch_from_bytes((daemon.config.daemon.state_dir / LATCH_FILE).read_bytes()).trips:
                await trio.sleep(0.01)
            persisted = latch_from_bytes((daemon.config.daemon.state_dir / LATCH_FILE).read_bytes())
            assert persisted.trips[0].operator == "alice"
