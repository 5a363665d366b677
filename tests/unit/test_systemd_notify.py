"""sd_notify: pure parsing, the progress gate, and the service against a real datagram socket."""

from __future__ import annotations

import os

import pytest
import trio

from killswitch.systemd import (
    Notifier,
    WatchdogGate,
    format_message,
    notify_address,
    notify_service,
    ping_period_s,
    watchdog_interval_s,
)
from tests.component.fakes import FakeSession
from tests.e2e.helpers import NotifyReader, inprocess_daemon, short_tmpdir


@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", None),
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@abstract/name", b"\0abstract/name"),
    ("relative/path", None),
    ("vsock:2:1234", None),
])
def test_notify_address(value, expected):
    assert notify_address(value) == expected


@pytest.mark.parametrize("env, pid, expected", [
    ({}, 10, None),
    ({"WATCHDOG_USEC": "10000000"}, 10, 10.0),
    ({"WATCHDOG_USEC": "0"}, 10, None),
    ({"WATCHDOG_USEC": "abc"}, 10, None),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "10"}, 10, 2.0),
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "11"}, 10, None),  # meant for another process
    ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": ""}, 10, 2.0),
])
def test_watchdog_interval(env, pid, expected):
    assert watchdog_interval_s(env, pid) == expected


def test_ping_at_half_interval():
    assert ping_period_s(10.0) == 5.0


def test_gate_pings_only_on_progress():
    gate = WatchdogGate()
    assert gate.should_ping(0)  # first ping once the engine exists
    assert not gate.should_ping(0)
    assert gate.should_ping(5)
    assert not gate.should_ping(5)
    assert not gate.should_ping(4)  # never goes backwards
    assert gate.should_ping(6)


def test_format_message_flattens_newlines_and_truncates_status():
    assert format_message(READY=1, STATUS="a\nb") == b"READY=1\nSTATUS=a b"
    assert len(format_message(STATUS="x" * 5000)) == len("STATUS=") + 1000


def test_notifier_disabled_without_socket():
    n = Notifier({})
    assert not n.enabled
    assert n.notify(READY=1) is False


async def test_notifier_sends_to_path_and_abstract_sockets():
    with trio.fail_after(5), short_tmpdir() as root:
        reader = NotifyReader(root / "notify")
        try:
            assert Notifier({"NOTIFY_SOCKET": str(root / "notify")}).notify(READY=1, STATUS="ok")
            assert await reader.next() == {"READY": "1", "STATUS": "ok"}
        finally:
            reader.close()
        name = f"ks-test-{os.getpid()}"
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_DGRAM)
        sock._sock.bind(b"\0" + name.encode())
        try:
            assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify(WATCHDOG=1)
            assert await sock.recv(100) == b"WATCHDOG=1"
        finally:
            sock.close()


async def test_notify_failure_is_not_fatal():
    with trio.fail_after(5), short_tmpdir() as root:
        # Nobody bound there: the send fails, is logged, returns False.
        assert Notifier({"NOTIFY_SOCKET": str(root / "gone")}).notify(READY=1) is False


# ---------------------------------------------------------------------------------- the service


class _Engine:
    def __init__(self) -> None:
        self.loop_iterations = 0


class _Daemon:
    """The slice of Daemon the notify service reads."""

    def __init__(self, environ) -> None:
        self.environ = environ
        self.ready = trio.Event()
        self.engine = _Engine()
        self.listeners = []
        self.line = "ARMED | ox:up/0"

    def status_line(self) -> str:
        return self.line


async def test_ready_only_after_daemon_ready_and_watchdog_gated_by_progress():
    with trio.fail_after(10), short_tmpdir() as root:
        reader = NotifyReader(root / "notify")
        env = {"NOTIFY_SOCKET": str(root / "notify"), "WATCHDOG_USEC": "200000"}
        d = _Daemon(env)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(notify_service, d)
                await reader.wait_for("STATUS", contains="starting")
                # Engine progresses: pings come; READY does not before daemon.ready.
                for _ in range(3):
                    d.engine.loop_iterations += 1
                    await reader.wait_for("WATCHDOG", "1")
                assert not reader.seen("READY")
                d.ready.set()
                ready = await reader.wait_for("READY", "1")
                assert ready["STATUS"] == d.line
                # Engine wedged: no progress, so no ping for several periods.
                d.engine.loop_iterations += 1
                await reader.wait_for("WATCHDOG", "1")
                with trio.move_on_after(0.6):  # 6 ping periods of 0.1 s
                    await reader.wait_for("WATCHDOG", "1")
                    pytest.fail("WATCHDOG=1 sent although the engine made no progress")
                d.engine.loop_iterations += 1
                await reader.wait_for("WATCHDOG", "1")  # resumes with progress
                # STATUS on change.
                d.line = "TRIPPED | ox:up/0"
                await reader.wait_for("STATUS", "TRIPPED | ox:up/0")
                # Lifecycle: reload and stop.
                for fn in d.listeners:
                    fn("reloading")
                msg = await reader.wait_for("RELOADING", "1")
                assert int(msg["MONOTONIC_USEC"]) > 0
                for fn in d.listeners:
                    fn("reloaded", ok=False)
                await reader.wait_for("READY", "1")
                for fn in d.listeners:
                    fn("stopping")
                await reader.wait_for("STOPPING", "1")
                nursery.cancel_scope.cancel()
            assert d.listeners == []
        finally:
            reader.close()


async def test_service_is_noop_without_notify_socket():
    with trio.fail_after(5):
        d = _Daemon({})
        async with trio.open_nursery() as nursery:
            await nursery.start(notify_service, d)
        assert d.listeners == []


async def test_real_daemon_ready_after_venues_up_then_watchdog_and_stopping():
    with trio.fail_after(20), short_tmpdir() as root:
        reader = NotifyReader(root / "notify")
        env = {"NOTIFY_SOCKET": str(root / "notify"), "WATCHDOG_USEC": "300000"}
        session = FakeSession("ox-a")
        session.add("BTC-USD-SWAP-LIN", 2)
        try:
            async with inprocess_daemon(root, [session], [notify_service], environ=env) as daemon:
                msg = await reader.wait_for("READY", "1")
                assert daemon.ready.is_set() and daemon.venues["ox-a"].up.is_set()
                assert msg["STATUS"].startswith("ARMED") and "ox-a:up/2" in msg["STATUS"]
                before = daemon.engine.loop_iterations
                await reader.wait_for("WATCHDOG", "1")
                await reader.wait_for("WATCHDOG", "1")
                assert daemon.engine.loop_iterations > before
            await reader.wait_for("STOPPING", "1")
        finally:
            reader.close()


# ---------------------------------------------------------------------------------- unit files

import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = ["killswitch.service", "killswitch@.service"]
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


def _installable_copy(unit: str, dest: Path, name: str | None = None) -> Path:
    # verify also checks that ExecStart's binary exists; point it at one that does.
    text = (UNITS_DIR / unit).read_text().replace("/opt/killswitch/venv/bin/killswitch", "/bin/true")
    path = dest / (name or unit)
    path.write_text(text)
    return path


@pytest.mark.parametrize("unit, name", [("killswitch.service", None), ("killswitch@.service", None),
                                        ("killswitch@.service", "killswitch@desk1.service")])
@needs_analyze
def test_unit_verifies_cleanly(tmp_path, unit, name):
    path = _installable_copy(unit, tmp_path, name)
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=30)
    # verify exits 0 on unknown keys and bad values (it only warns), so any warning naming our
    # file is a failure.
    ours = [line for line in (res.stdout + res.stderr).splitlines() if path.name in line]
    assert res.returncode == 0 and not ours, res.stdout + res.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_has_the_operational_contract(unit):
    text = (UNITS_DIR / unit).read_text()
    keys = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert keys["Type"] == "notify" and keys["NotifyAccess"] == "main" and keys["WatchdogSec"] == "10s"
    assert keys["Restart"] == "always" and keys["RestartSec"] == "1"
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID" and keys["KillSignal"] == "SIGTERM"
    assert int(keys["TimeoutStopSec"].rstrip("s")) > 10  # > default cancel_deadline
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "MemoryDenyWriteExecute",
                "LockPersonality", "RestrictRealtime", "RestrictSUIDSGID", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups"):
        assert keys[key] == "yes", key
    assert keys["ProtectSystem"] == "strict" and keys["CapabilityBoundingSet"] == "" and keys["UMask"] == "0077"
    assert keys["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert "LoadCredential=" in text


@needs_analyze
def test_unit_security_exposure_is_low(tmp_path):
    path = _installable_copy("killswitch.service", tmp_path)
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)], capture_output=True,
                         text=True, timeout=30)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout + res.stderr)
    if m is None:
        pytest.skip("this systemd-analyze has no offline security mode")
    assert float(m.group(1)) <= 2.5, res.stdout
