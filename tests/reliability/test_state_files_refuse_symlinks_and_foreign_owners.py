"""#14.5: the latch files and the audit log are never followed through a symlink nor taken over
from another uid. At start-up the daemon refuses with a clear error naming the file (exit 2,
before any venue connection); a symlink planted at the audit path while running is not
followed (the records wait in memory, ``audit_unwritable`` is raised).
"""

from __future__ import annotations

import os

import pytest
import trio

from killswitch.audit import AuditLog
from killswitch.config import load_config_text
from killswitch.daemon import EXIT_CONFIG, Daemon
from killswitch.engine.latch import LatchStore
from killswitch.statefile import StateFileError

from .harness import daemon_yaml, running_daemon, start_ox, wait_for

NOBODY = 65534


def _plant(state, name: str, how: str, target) -> None:
    state.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"precious\n")
    p = state / name
    if how == "symlink":
        p.symlink_to(target)
    else:
        if os.geteuid() != 0:
            print("SKIP: chown to another uid needs root")
            pytest.skip("a file owned by another uid needs root to create")
        p.write_bytes(b"")
        os.chown(p, NOBODY, NOBODY)


@pytest.mark.parametrize("how", ["symlink", "foreign"])
@pytest.mark.parametrize("name", ["latch.json", "latch.intent", "audit.jsonl"])
async def test_daemon_refuses_a_planted_state_file_with_a_clear_error(tmp_path, name, how, capsys):
    state = tmp_path / "state"
    target = tmp_path / "target"
    _plant(state, name, how, target)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            text = daemon_yaml(tmp_path, w.venue_yaml())
            d = Daemon(load_config_text(text, str(tmp_path / "k.yaml")), environ=w.env(), handle_signals=False)
            code = await d.run()
            nursery.cancel_scope.cancel()
    assert code == EXIT_CONFIG
    out = capsys.readouterr()
    text_out = out.out + out.err
    assert f"refusing state file {state / name}" in text_out
    assert ("symbolic link" if how == "symlink" else f"owned by uid {NOBODY}") in text_out
    assert target.read_bytes() == b"precious\n"  # never written through the link


def test_store_and_audit_raise_state_file_errors_naming_the_file(tmp_path):
    target = tmp_path / "t"
    target.write_bytes(b"x")
    (tmp_path / "latch.json").symlink_to(target)
    with pytest.raises(StateFileError, match="latch.json: it is a symbolic link"):
        LatchStore(tmp_path).load()
    (tmp_path / "audit.jsonl").symlink_to(target)
    with pytest.raises(StateFileError, match="audit.jsonl: it is a symbolic link"):
        AuditLog(tmp_path / "audit.jsonl", wall_ms=lambda: 0).open()
    os.mkfifo(tmp_path / "latch.intent")
    with pytest.raises(StateFileError, match="not a regular file"):
        LatchStore(tmp_path).open_intent()  # a FIFO is refused, never blocks


async def test_a_symlink_planted_at_the_audit_path_while_running_is_not_followed(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, w.venue_yaml()), w.env()) as d:
                audit = tmp_path / "state" / "audit.jsonl"
                target = tmp_path / "elsewhere"
                target.write_bytes(b"")
                os.rename(audit, tmp_path / "state" / "audit.jsonl.1")
                audit.symlink_to(target)
                d.audit.record("after_plant")  # still reaches the renamed file, open on our fd
                await wait_for(lambda: "audit_unwritable" in d.engine.alarms)
                assert "symbolic link" in d.engine.alarms["audit_unwritable"]
                d.audit.record("while_refused")  # waits in memory
                await d.audit.flush()
                assert target.read_bytes() == b""
                audit.unlink()  # the operator removes the link: the queued records are written
                await wait_for(lambda: "audit_unwritable" not in d.engine.alarms)
                await d.audit.flush()
                assert b"while_refused" in audit.read_bytes()
                assert b"after_plant" in (tmp_path / "state" / "audit.jsonl.1").read_bytes()
                assert target.read_bytes() == b"" and not audit.is_symlink()
            nursery.cancel_scope.cancel()
