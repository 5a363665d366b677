"""A second ``killswitch run`` on the same state directory or control socket stops at once
(exit 2, naming the running instance's PID) and never opens a connection to a venue. The
second instance's config points at a simulator of its own (same account): any connection or
request that simulator counts is the second instance reaching a venue."""

from __future__ import annotations

import os

import trio

from killswitch.instance_lock import LOCK_FILE, InstanceLock, InstanceLockError
from tests.e2e.helpers import DaemonProcess, child_env, short_tmpdir

from .harness import audit_lines_lenient, daemon_yaml, start_ox, wait_for


def _venue_traffic(ox) -> tuple[int, int]:
    return ox.sim.counters["connections_opened"], ox.sim.counters["rest_requests"]


async def _second_instance_refused(*, same_socket: bool) -> None:
    with short_tmpdir() as root, trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            await ox.place(2)
            env = child_env(root, **ox.env())
            cfg_a = root / "a.yaml"
            cfg_a.write_text(daemon_yaml(root, ox.venue_yaml()))
            first = DaemonProcess(cfg_a, env, root / "a.log").start()
            second = None
            try:
                audit = root / "state" / "audit.jsonl"
                await wait_for(lambda: any(r["event"] == "ready" for r in audit_lines_lenient(audit)), step_s=0.02)
                ox_b = await start_ox(nursery)
                ox_b.sim.add_account(ox.key, ox.secret, balances={"OX": "1000"})
                ox_b.key, ox_b.secret = ox.key, ox.secret
                text = daemon_yaml(root, ox_b.venue_yaml())
                if same_socket:  # another state dir, the same control socket
                    text = text.replace(f"state_dir: {root / 'state'}", f"state_dir: {root / 'state-b'}")
                else:  # the same state dir, another control socket
                    text = text.replace(f"control_socket: {root / 'control.sock'}",
                                        f"control_socket: {root / 'control-b.sock'}")
                cfg_b = root / "b.yaml"
                cfg_b.write_text(text)
                second = DaemonProcess(cfg_b, env, root / "b.log").start()
                code = await second.wait_exit(10)
                log_b = second.log_text()
                assert code == 2, log_b
                assert f"pid {first.pid}" in log_b, log_b
                assert _venue_traffic(ox_b) == (0, 0), "the second instance reached the venue"
                assert first.proc.poll() is None  # the first keeps guarding
                assert not (root / "control-b.sock").exists()
            finally:
                first.kill()
                if second is not None:
                    second.kill()
            nursery.cancel_scope.cancel()


async def test_second_daemon_on_same_state_dir_exits_2_naming_pid_and_never_reaches_venue():
    await _second_instance_refused(same_socket=False)


async def test_second_daemon_on_same_control_socket_exits_2_naming_pid_and_never_reaches_venue():
    await _second_instance_refused(same_socket=True)


def test_lock_file_symlink_is_refused_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(target, state / LOCK_FILE)
    try:
        InstanceLock(state).acquire()
    except InstanceLockError as exc:
        assert "symlink" in str(exc)
    else:
        raise AssertionError("a symlinked lock file was accepted")
    assert target.read_text() == "keep me\n"


def test_lock_is_released_when_the_holder_closes(tmp_path):
    a = InstanceLock(tmp_path)
    a.acquire()
    b = InstanceLock(tmp_path)
    try:
        b.acquire()
    except InstanceLockError as exc:
        assert f"pid {os.getpid()}" in str(exc)
    else:
        raise AssertionError("two holders of one lock")
    a.release()
    b.acquire()
    assert b.held
    b.release()


def test_lock_file_owned_by_another_uid_is_refused(tmp_path):
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root to create a file owned by another uid")
    state = tmp_path / "state"
    state.mkdir()
    lock = state / LOCK_FILE
    lock.write_text("4242\n")
    os.chown(lock, 54321, 54321)
    try:
        InstanceLock(state).acquire()
    except InstanceLockError as exc:
        assert "uid 54321" in str(exc)
    else:
        raise AssertionError("another user's lock file was used")
    assert lock.read_text() == "4242\n"
