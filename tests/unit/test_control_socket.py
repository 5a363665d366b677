"""The control socket on a real AF_UNIX socket, served by a real in-process Daemon (fake venues)."""

from __future__ import annotations

import grp
import os
import socket
import stat
from decimal import Decimal
from types import SimpleNamespace

import orjson
import pytest
import trio

from killswitch.audit import read_audit
from killswitch.control import (
    MAX_REQUEST_BYTES,
    AsyncControlClient,
    ControlClient,
    ControlPermissionDenied,
    DaemonNotRunning,
    control_service,
    run_cli,
)
from killswitch.daemon import EXIT_CONFIG, Daemon
from killswitch.model import EquityObserved
from killswitch.config import load_config
from tests.component.fakes import FakeSession
from tests.e2e.helpers import base_yaml, FAKE_VENUE_YAML, inprocess_daemon, short_tmpdir

PRODUCT = "BTC-USD-SWAP-LIN"


def sock_path(daemon):
    return daemon.config.daemon.control_socket


async def audit_of(daemon):
    await daemon.audit.flush()
    return read_audit(daemon.config.daemon.audit_log)


async def test_status_heartbeats_on_one_connection_and_file_modes():
    with trio.fail_after(15), short_tmpdir() as root:
        session = FakeSession("ox-a")
        async with inprocess_daemon(root, [session], [control_service]) as daemon:
            path = sock_path(daemon)
            assert stat.S_ISSOCK(os.lstat(path).st_mode)
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o750
            async with AsyncControlClient(path) as client:
                st = await client.request({"op": "status", "id": 7})
                assert st["ok"] and st["state"] == "armed" and st["ready"] and st["id"] == 7
                assert "ox-a" in st["venues"] and st["pid"] == os.getpid()
                events_before = daemon.engine.counters.events
                for _ in range(200):
                    assert (await client.request({"op": "heartbeat", "source": "strat-a"})) == {"ok": True}
                assert daemon.engine.counters.events >= events_before + 200
                # A bad request does not close the connection.
                bad = await client.request({"op": "heartbeat"})
                assert not bad["ok"] and "source" in bad["error"]
                assert (await client.request({"op": "status"}))["ok"]

            def sync_client():
                with ControlClient(path) as c:
                    return c.heartbeat("strat-b"), c.status()["state"]

            assert await trio.to_thread.run_sync(sync_client) == ({"ok": True}, "armed")
        assert not path.exists()  # removed at shutdown


async def test_trip_replies_after_the_engine_tripped_then_reset():
    with trio.fail_after(15), short_tmpdir() as root:
        session = FakeSession("ox-a")
        session.add(PRODUCT, 3)
        async with inprocess_daemon(root, [session], [control_service]) as daemon:
            async with AsyncControlClient(sock_path(daemon)) as client:
                reply = await client.request({"op": "trip", "reason": "fat finger", "operator": "alice"})
                assert reply["ok"] and reply["state"] == "tripped" and reply["trip_id"] == 1
                assert daemon.engine.latch.tripped  # evidence, not hope
                assert reply["trips"][0]["reason"] == "fat finger"
                with trio.fail_after(5):
                    while session.orders or not daemon.engine.all_flat():
                        await trio.sleep(0.01)
                bad = await client.request({"op": "reset", "operator": "bob"})
                assert not bad["ok"] and "reason" in bad["error"] and daemon.engine.latch.tripped
                reply = await client.request({"op": "reset", "operator": "bob", "reason": "checked the book"})
                assert reply["ok"] and reply["state"] == "armed" and not reply["noop"]
                assert reply["last_reset"]["operator"] == "bob"
                again = await client.request({"op": "reset", "operator": "bob", "reason": "twice"})
                assert again["ok"] and again["noop"]
            records = await audit_of(daemon)
            cmds = [r for r in records if r["event"] == "control_command"]
            assert [c["op"] for c in cmds] == ["trip", "reset", "reset"]
            assert cmds[0]["peer_uid"] == os.getuid() and cmds[0]["peer_pid"] == os.getpid()
            assert cmds[0]["operator"] == "alice"
            trip = next(r for r in records if r["event"] == "trip")
            assert trip["source"] == "control" and trip["operator"] == "alice"
            assert any(r["event"] == "reset" and r["operator"] == "bob" for r in records)


async def test_scoped_trip_cash_flow_and_errors():
    with trio.fail_after(15), short_tmpdir() as root:
        session = FakeSession("ox-a")
        async with inprocess_daemon(root, [session], [control_service]) as daemon:
            async with AsyncControlClient(sock_path(daemon)) as client:
                r = await client.request({"op": "trip", "reason": "r", "venues": ["ghost"]})
                assert not r["ok"] and "unknown venue" in r["error"] and not daemon.engine.latch.tripped
                # A flow is checked against the venue's current equity, so the venue reports one first.
                await daemon.send.send(EquityObserved("ox-a", Decimal(1000), "USD"))
                while daemon.engine.state.book("ox-a").equity is None:
                    await trio.sleep(0.01)
                r = await client.request({"op": "cash_flow", "venue": "ox-a", "amount": "-250.5", "operator": "c"})
                assert r == {"ok": True, "venue": "ox-a", "amount": "-250.5"}
                r = await client.request({"op": "debug_wedge", "seconds": 1})
                assert not r["ok"] and r["code"] == "disabled"
                r = await client.request({"op": "trip", "reason": "one product", "venues": ["ox-a"],
                                          "products": [PRODUCT]})
                assert r["ok"] and daemon.engine.latch.trips[-1].scope.products == frozenset({PRODUCT})
            records = await audit_of(daemon)
            assert any(r["event"] == "cash_flow_declared" and r["amount"] == "-250.5" for r in records)


async def test_malformed_and_oversized_requests():
    with trio.fail_after(15), short_tmpdir() as root:
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service]) as daemon:
            stream = await trio.open_unix_socket(os.fspath(sock_path(daemon)))
            async with stream:
                await stream.send_all(b"{nope\n")
                line = await stream.receive_some(4096)
                assert orjson.loads(line)["code"] == "bad_request"
                await stream.send_all(b"x" * (MAX_REQUEST_BYTES + 10))
                data = b""
                while not data.endswith(b"\n"):
                    chunk = await stream.receive_some(4096)
                    assert chunk
                    data += chunk
                assert orjson.loads(data)["code"] == "too_large"
                assert await stream.receive_some(10) == b""  # closed after an oversized request


async def test_stale_socket_removed_but_non_socket_refused():
    with trio.fail_after(15), short_tmpdir() as root:
        run_dir = root / "run"
        run_dir.mkdir()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(os.fspath(run_dir / "control.sock"))
        stale.close()  # a leftover socket file nobody listens on
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service]) as daemon:
            async with AsyncControlClient(sock_path(daemon)) as client:
                assert (await client.request({"op": "status"}))["ok"]

    with trio.fail_after(15), short_tmpdir() as root:
        (root / "run").mkdir()
        (root / "run" / "control.sock").write_text("not a socket")
        cfg_path = root / "killswitch.yaml"
        cfg_path.write_text(base_yaml(root, FAKE_VENUE_YAML))
        daemon = Daemon(load_config(cfg_path), sessions={"ox-a": FakeSession("ox-a")}, handle_signals=False,
                        services=[control_service], environ={})
        assert await daemon.run() == EXIT_CONFIG
        assert "not a socket" in str(daemon.fatal)
        assert (root / "run" / "control.sock").read_text() == "not a socket"  # untouched


async def test_cli_verbs_and_errors(capsys):
    with trio.fail_after(15), short_tmpdir() as root:
        session = FakeSession("ox-a")
        async with inprocess_daemon(root, [session], [control_service]) as daemon:
            path = sock_path(daemon)

            def cli(**kw):
                return run_cli(SimpleNamespace(**kw), path)

            def out_of_cli() -> str:
                # The in-process daemon logs to the same captured stdout: keep the CLI's lines.
                out = capsys.readouterr().out
                return "\n".join(line for line in out.splitlines() if not line[:4].isdigit())

            assert await trio.to_thread.run_sync(lambda: cli(verb="status", json=False)) == 0
            out = out_of_cli()
            assert out.startswith("killswitch: ARMED") and "ox-a" in out and "max-open" in out
            assert await trio.to_thread.run_sync(lambda: cli(verb="status", json=True)) == 0
            assert orjson.loads(out_of_cli())["state"] == "armed"
            assert await trio.to_thread.run_sync(lambda: cli(verb="heartbeat", source="s")) == 0
            assert out_of_cli().strip() == "ok"
            assert await trio.to_thread.run_sync(
                lambda: cli(verb="trip", reason="test", operator="op", venue=None, product=None)) == 0
            assert out_of_cli().startswith("TRIPPED: trip #1")
            assert await trio.to_thread.run_sync(
                lambda: cli(verb="reset", operator="op", reason="done")) == 0
            assert "re-armed by op" in out_of_cli()
            assert await trio.to_thread.run_sync(
                lambda: cli(verb="trip", reason="t", operator="op", venue=["ghost"], product=None)) == 1
            assert "unknown venue" in capsys.readouterr().err
        # Daemon gone: clear message, exit 1.
        assert run_cli(SimpleNamespace(verb="status", json=False), path) == 1
        assert "not running" in capsys.readouterr().err
        with pytest.raises(DaemonNotRunning):
            ControlClient(path).status()


# ---------------------------------------------------------------------------------- peer credentials

def _child_client(path: str) -> bytes:
    """What the forked child does after dropping to another uid: a trip through ControlClient."""
    try:
        reply = ControlClient(path, timeout_s=5).trip("not allowed", "mallory")
    except ControlPermissionDenied as exc:
        return f"denied: {exc}".encode()
    return orjson.dumps(reply)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a client as another uid needs root")


def _fork_as(uid: int, gid: int, path: str) -> str:
    """Fork, drop to uid/gid (no supplementary groups) in the child, run the client there.

    A fork rather than a subprocess: the test interpreter may live where that uid cannot read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.write(w, _child_client(path))
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
    return b"".join(chunks).decode()


async def run_as(uid: int, gid: int, path) -> str:
    # The daemon answers from the trio loop, so the blocking fork+wait runs in a thread.
    return await trio.to_thread.run_sync(_fork_as, uid, gid, os.fspath(path))


@needs_root
async def test_peer_without_permission_is_refused_and_audited():
    with trio.fail_after(20), short_tmpdir() as root:
        os.chmod(root, 0o755)
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service]) as daemon:
            path = sock_path(daemon)
            # The file mode (0600, dir 0750) already keeps strangers out...
            out = await run_as(65534, 65534, path)
            assert out.startswith("denied: permission denied on") and "control_socket_group" in out
            # ...and if an admin loosens it, SO_PEERCRED still refuses.
            os.chmod(path.parent, 0o755)
            os.chmod(path, 0o666)
            out = await run_as(65534, 65534, path)
            assert out.startswith("denied: ") and "uid 65534 holds no control role" in out
            assert not daemon.engine.latch.tripped
            records = await audit_of(daemon)
            refused = [r for r in records if r["event"] == "control_refused"]
            assert refused and refused[0]["peer_uid"] == 65534
            assert daemon.control.refused == 1


@needs_root
async def test_control_group_members_are_allowed():
    try:
        group = grp.getgrgid(65534).gr_name
    except KeyError:
        pytest.skip("no group with gid 65534")
    with trio.fail_after(20), short_tmpdir() as root:
        os.chmod(root, 0o755)
        yaml_text = base_yaml(root, FAKE_VENUE_YAML, daemon_extra=f"control_socket_group: {group}\n")
        async with inprocess_daemon(root, [FakeSession("ox-a")], [control_service], yaml_text=yaml_text) as daemon:
            path = sock_path(daemon)
            st = os.lstat(path)
            assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 65534
            assert os.stat(path.parent).st_gid == 65534
            reply = orjson.loads(await run_as(65534, 65534, path))
            assert reply["ok"] is True and reply["state"] == "tripped"
            assert daemon.engine.latch.trips[-1].source == "control"
