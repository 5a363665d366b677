"""Local attack surface (issue: control-socket roles, bounded endpoints, descriptor headroom).

The guarded strategy usually runs on the same host under its own uid. These tests run it as a
second uid (forked from the root test runner, dropped with setuid) against the real daemon:
it may heartbeat and trip but never re-arm or declare a cash flow; it cannot starve
``killswitch trip`` with idle connections; and no local user can take the descriptors a venue
reconnect needs by hogging the metrics port.
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import trio

from killswitch.control import ControlClient, control_service
from killswitch.control import server as control_server
from tests.component.fakes import FakeSession
from tests.e2e.helpers import FAKE_VENUE_YAML, REPO, base_yaml, child_env, inprocess_daemon, short_tmpdir

from .harness import OX_MARKETS, audit_lines_lenient, daemon_yaml, start_ox, wait_for

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a client as a second uid needs root")


def nobody_name() -> str:
    try:
        return pwd.getpwuid(NOBODY).pw_name
    except KeyError:
        pytest.skip("no user with uid 65534 on this machine")


def _fork_as(uid: int, fn, *args) -> bytes:
    """Run ``fn(*args) -> bytes`` in a child that dropped to ``uid`` (no groups); its output."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(w, fn(*args))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks)


def _strategy_requests(path: str) -> bytes:
    out = []
    with ControlClient(path, timeout_s=8) as ks:
        for req in ({"op": "heartbeat", "source": "mm-bot"},
                    {"op": "cash_flow", "venue": "ox-a", "amount": "-1000000", "operator": "mm-bot"},
                    {"op": "trip", "reason": "strategy pulls the switch", "operator": "mm-bot"},
                    {"op": "reset", "operator": "risk-desk", "reason": "I'd like to keep trading"}):
            try:
                out.append(ks.request(req))
            except Exception as exc:  # ControlPermissionDenied: the reply said permission_denied
                out.append({"ok": False, "error": str(exc), "raised": type(exc).__name__})
    return orjson.dumps(out)


@needs_root
async def test_strategy_with_the_heartbeat_role_can_trip_but_never_reset_or_declare_cash_flows():
    name = nobody_name()
    with trio.fail_after(30), short_tmpdir() as root:
        os.chmod(root, 0o755)
        extra = f"control:\n  heartbeat: {{users: [{name}]}}\n"
        yaml_text = base_yaml(root, FAKE_VENUE_YAML, daemon_extra=extra)
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service], yaml_text=yaml_text) as daemon:
            path = os.fspath(daemon.control.path)
            hb, cash, trip, reset = orjson.loads(await trio.to_thread.run_sync(
                _fork_as, NOBODY, _strategy_requests, path))
            assert hb["ok"] is True
            assert trip["ok"] is True and trip["state"] == "tripped"
            assert cash["ok"] is False and "operator role" in cash["error"]
            assert reset["ok"] is False and "operator role" in reset["error"]
            assert daemon.engine.latch.tripped  # the strategy could not re-arm it
            records = [orjson.loads(line) for line in daemon.config.daemon.audit_log.read_bytes().splitlines()]
            refused = [r for r in records if r["event"] == "control_refused"]
            assert {r.get("op") for r in refused} == {"cash_flow", "reset"}
            assert all(r["peer_uid"] == NOBODY and r["peer_user"] == name for r in refused)
            trip_rec = next(r for r in records if r["event"] == "control_command" and r["op"] == "trip")
            assert trip_rec["peer_uid"] == NOBODY and trip_rec["peer_user"] == name
            assert trip_rec["operator"] == "mm-bot"  # self-declared, recorded next to the kernel's word
            # The operator (root here) re-arms it, and the record says who really did.
            reply = await trio.to_thread.run_sync(lambda: ControlClient(path).reset("alice", "checked"))
            assert reply["ok"] is True and reply["state"] == "armed"
            records = [orjson.loads(line) for line in daemon.config.daemon.audit_log.read_bytes().splitlines()]
            rst = [r for r in records if r["event"] == "control_command" and r["op"] == "reset"]
            assert rst and rst[-1]["peer_uid"] == 0 and rst[-1]["operator"] == "alice"


def _hold_idle_connections(path: str, n: int, ready_w: int, release_r: int) -> bytes:
    socks, refused = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(path)
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    os.write(ready_w, b"x")
    os.read(release_r, 1)  # hold them until the parent is done
    return orjson.dumps({"opened": len(socks), "refused": refused})


@needs_root
async def test_500_idle_connections_from_the_heartbeat_uid_do_not_keep_a_trip_out():
    name = nobody_name()
    with trio.fail_after(40), short_tmpdir() as root:
        os.chmod(root, 0o755)
        extra = f"control:\n  heartbeat: {{users: [{name}]}}\n  idle_timeout: 30s\n"
        yaml_text = base_yaml(root, FAKE_VENUE_YAML, daemon_extra=extra)
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service], yaml_text=yaml_text) as daemon:
            path = os.fspath(daemon.control.path)
            ready_r, ready_w = os.pipe()
            release_r, release_w = os.pipe()
            async with trio.open_nursery() as nursery:
                result: list[bytes] = []

                async def hog():
                    result.append(await trio.to_thread.run_sync(
                        _fork_as, NOBODY, _hold_idle_connections, path, 500, ready_w, release_r))

                nursery.start_soon(hog)
                await trio.to_thread.run_sync(os.read, ready_r, 1)
                await wait_for(lambda: daemon.control.budget.held.get(NOBODY, 0) > 0)
                held = daemon.control.budget.held.get(NOBODY, 0)
                assert held <= daemon.control.budget.per_uid  # the rest were answered busy and closed

                def operator_trip() -> tuple[dict, float]:
                    t0 = time.monotonic()
                    reply = ControlClient(path, timeout_s=5).trip("operator trip under a connection flood", "alice")
                    return reply, time.monotonic() - t0

                reply, elapsed = await trio.to_thread.run_sync(operator_trip)
                os.write(release_w, b"x")
            for fd in (ready_r, ready_w, release_r, release_w):
                os.close(fd)
            assert reply["ok"] is True and reply["state"] == "tripped"
            assert elapsed < 1.0, elapsed
            hogged = orjson.loads(result[0])
            assert hogged["opened"] + hogged["refused"] == 500
            assert daemon.control.busy > 0  # the flood was answered "busy", not queued


async def test_group_roles_never_call_the_group_database_per_request(monkeypatch):
    """Roles are resolved when the config is loaded; with /proc hidden and every NSS call
    failing, requests still get their answers (nothing blocks the event loop per request)."""
    gid = os.getgid()
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        pytest.skip(f"the runner's gid {gid} has no group name")
    with trio.fail_after(20), short_tmpdir() as root:
        extra = f"control_socket_group: {group}\ncontrol:\n  heartbeat: {{groups: [{group}]}}\n"
        yaml_text = base_yaml(root, FAKE_VENUE_YAML, daemon_extra=extra)
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service], yaml_text=yaml_text) as daemon:
            path = os.fspath(daemon.control.path)
            calls: list[str] = []

            def nss(name):
                def fail(*a, **k):
                    calls.append(name)
                    raise RuntimeError(f"{name} called while serving a request")
                return fail

            for mod, fn in ((grp, "getgrall"), (grp, "getgrnam"), (grp, "getgrgid"),
                            (pwd, "getpwuid"), (pwd, "getpwnam"), (pwd, "getpwall")):
                monkeypatch.setattr(mod, fn, nss(f"{mod.__name__}.{fn}"))
            monkeypatch.setattr(control_server, "PROC_STATUS", "/nonexistent/{pid}/status")

            def requests() -> list[dict]:
                with ControlClient(path, timeout_s=5) as ks:
                    return [ks.status(), ks.heartbeat("bot"), ks.trip("proc hidden", "alice")]

            st, hb, tr = await trio.to_thread.run_sync(requests)
            assert st["ok"] and hb["ok"] and tr["ok"] and tr["state"] == "tripped"
            assert calls == []


# ---------------------------------------------------------------------------------- descriptors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _low_fd_limit() -> None:  # preexec: the daemon cannot raise its way out of this one
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _hog_tcp(port: int, n: int, ready_w: int, release_r: int) -> bytes:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks, failed = [], 0
    for _ in range(n):
        s = socket.socket()
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    os.write(ready_w, b"x")
    os.read(release_r, 1)
    return orjson.dumps({"opened": len(socks), "failed": failed})


async def test_metrics_fd_hog_cannot_stop_a_venue_reconnect_and_a_trip(tmp_path):
    """1100 idle TCP connections to the metrics port of a daemon held to 1024 descriptors, then
    the venue drops and the operator trips: the daemon reconnects, cancels, and the venue's own
    book is empty."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            await w.place(6, OX_MARKETS[0])
            await w.place(6, OX_MARKETS[1], side="SELL", price="999999")
            port = _free_port()
            text = daemon_yaml(tmp_path, w.venue_yaml()).replace(
                "daemon:\n", f"daemon:\n  metrics: {{enabled: true, host: 127.0.0.1, port: {port}}}\n", 1)
            cfg = tmp_path / "killswitch.yaml"
            cfg.write_text(text)
            audit = tmp_path / "state" / "audit.jsonl"
            log = open(tmp_path / "daemon.log", "wb")
            proc = subprocess.Popen([sys.executable, "-m", "killswitch", "run", "-c", str(cfg)],
                                    env=child_env(tmp_path, **w.env()), stdout=log, stderr=subprocess.STDOUT,
                                    cwd=REPO, preexec_fn=_low_fd_limit)
            ready_r, ready_w = os.pipe()
            release_r, release_w = os.pipe()
            try:
                await wait_for(lambda: any(r["event"] == "ready" for r in audit_lines_lenient(audit)), step_s=0.05)
                hog_uid = NOBODY if os.geteuid() == 0 else None
                result: list[bytes] = []

                async def hog():
                    if hog_uid is None:
                        result.append(await trio.to_thread.run_sync(_hog_in_child, port, ready_w, release_r))
                    else:
                        result.append(await trio.to_thread.run_sync(
                            _fork_as, hog_uid, _hog_tcp, port, 1100, ready_w, release_r))

                nursery.start_soon(hog)
                await trio.to_thread.run_sync(os.read, ready_r, 1)
                fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
                assert fds < 900, f"the daemon holds {fds} descriptors under the hog"
                await w.sim.drop_connections(w.key)
                proc.send_signal(signal.SIGUSR1)
                with trio.fail_after(20):
                    await wait_for(lambda: not w.open_orders() and any(
                        r["event"] == "flat" for r in audit_lines_lenient(audit)), step_s=0.05)
                os.write(release_w, b"x")
            finally:
                proc.kill()
                proc.wait(5)
                log.close()
            nursery.cancel_scope.cancel()
    assert not w.open_orders()


def _hog_in_child(port: int, ready_w: int, release_r: int) -> bytes:
    """Non-root: the hog runs as our own uid in a forked child (TCP does not care who)."""
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.write(wfd, _hog_tcp(port, 1100, ready_w, release_r))
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out


def test_run_raises_the_soft_descriptor_limit_to_the_hard_limit(tmp_path):
    code = ("import resource; from killswitch.fdlimit import raise_nofile_limit; "
            "print(raise_nofile_limit())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096)),
                         env=child_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(256, 4096, 4096)"


def test_units_set_a_descriptor_limit():
    for unit in ("killswitch.service", "killswitch@.service"):
        text = (Path(REPO) / "systemd" / unit).read_text()
        assert "\nLimitNOFILE=" in text, unit
