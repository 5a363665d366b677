"""#11.10: deleting or rotating the audit log or the intent file while running loses nothing.

The real Daemon against OxfunSim, with its control socket. Rotation the logrotate way
(rename, ``create`` a new file, postrotate ``killswitch reopen`` over the control socket or
SIGHUP) and the careless way (rename only; the daemon notices on its next flush), all while
records pour in and a trip cancels the sim's orders: every record is present exactly once
across the files. A deleted audit log or intent file is recreated and alarmed once, and a trip
after a deleted intent file still restarts TRIPPED.
"""

from __future__ import annotations

import errno
import os
import signal
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from killswitch.cli import main as cli_main
from killswitch.config import load_config_text
from killswitch.control import AsyncControlClient, control_service
from killswitch.daemon import Daemon
from killswitch.engine.latch import LatchState, LatchStore

from ..e2e.helpers import short_tmpdir
from .harness import (
    OX_MARKETS,
    OX_VENUE,
    daemon_yaml,
    read_audit_strict,
    running_daemon,
    start_ox,
    trip,
    venue_flat,
    wait_for,
)

N = 20


@asynccontextmanager
async def _daemon_with_control(root: Path, text: str, env: dict, *, handle_signals: bool = False):
    (root / "killswitch.yaml").write_text(text)
    config = load_config_text(text, str(root / "killswitch.yaml"))
    d = Daemon(config, environ=env, handle_signals=handle_signals, services=[control_service])
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        try:
            yield d
        finally:
            d.request_stop()


def _all_records(audit_path: Path) -> list[dict]:
    recs = []
    for p in sorted(audit_path.parent.glob(audit_path.name + "*")):
        recs += read_audit_strict(p)
    return recs


def _assert_each_record_exactly_once(recs: list[dict], n_load: int) -> None:
    loads = sorted(r["n"] for r in recs if r["event"] == "load")
    assert loads == list(range(n_load)), f"lost or duplicated load records: {len(loads)} of {n_load}"
    seqs = sorted(r["seq"] for r in recs)
    assert seqs == list(range(1, len(seqs) + 1)), "an audit record is missing or duplicated across files"


async def test_audit_log_rotated_under_load_loses_and_duplicates_no_record():
    with short_tmpdir() as root, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            await w.place(N, OX_MARKETS[0])
            text = daemon_yaml(root, w.venue_yaml())
            async with _daemon_with_control(root, text, w.env(), handle_signals=True) as d:
                audit = Path(d.config.daemon.audit_log)
                sock = d.config.daemon.control_socket
                produced = [0]
                stop = trio.Event()

                async def load() -> None:
                    while not stop.is_set():
                        for _ in range(20):
                            d.audit.record("load", n=produced[0])
                            produced[0] += 1
                        await trio.sleep(0.001)

                nursery.start_soon(load)
                await wait_for(lambda: produced[0] > 200)
                for i in range(6):
                    before = produced[0]
                    os.rename(audit, audit.with_name(f"{audit.name}.{i + 1}"))
                    if i == 2:
                        # Renamed with nothing created and no postrotate: noticed on the next flush.
                        await wait_for(lambda: "audit_file_replaced" in d.engine.alarms)
                        assert audit.exists()
                    else:
                        fd = os.open(audit, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # logrotate `create`
                        os.close(fd)
                    if i == 4:
                        os.kill(os.getpid(), signal.SIGHUP)  # postrotate: systemctl reload
                        await wait_for(lambda: d.reloads >= 1)
                    else:
                        async with AsyncControlClient(sock) as c:  # postrotate: killswitch reopen
                            reply = await c.request({"op": "reopen"})
                        assert reply["ok"], reply
                    if i == 1:
                        await trip(d)  # a trip's records straddle a rotation
                    await wait_for(lambda before=before: produced[0] > before + 200)
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
                await wait_for(lambda: "audit_file_replaced" not in d.engine.alarms)
                stop.set()
                await trio.sleep(0.01)
                await d.audit.flush()
                recs = _all_records(audit)
                alarms = [r for r in recs if r["event"] == "alarm" and r["key"] == "audit_file_replaced"]
            nursery.cancel_scope.cancel()
    _assert_each_record_exactly_once(recs, produced[0])
    assert len(alarms) == 1  # only the rename with nothing put in its place alarms, once


async def test_a_deleted_audit_log_is_recreated_alarmed_once_and_records_after_it_are_kept(tmp_path):
    """Before: every record after the deletion went to the unlinked file (lost), silently."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            await w.place(N, OX_MARKETS[0])
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, w.venue_yaml()), w.env()) as d:
                audit = Path(d.config.daemon.audit_log)
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await d.audit.flush()
                os.unlink(audit)
                d.audit.record("after_delete", n=1)
                await trip(d)
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
                await wait_for(lambda: "audit_file_replaced" in d.engine.alarms)
                assert "deleted" in d.engine.alarms["audit_file_replaced"]
                d.audit.record("after_delete", n=2)
                await d.audit.flush()
                recs = read_audit_strict(audit)
            nursery.cancel_scope.cancel()
    events = [r["event"] for r in recs]
    assert [r["n"] for r in recs if r["event"] == "after_delete"] == [1, 2]
    assert "trip" in events and "flat" in events
    assert sum(1 for r in recs if r["event"] == "alarm" and r["key"] == "audit_file_replaced") == 1


async def test_a_deleted_intent_file_is_recreated_so_a_later_trip_still_restarts_tripped(tmp_path):
    """Before: the trip's intent went to the unlinked file and a restart came back ARMED."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            await w.place(N, OX_MARKETS[0])
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, w.venue_yaml()), w.env()) as d:
                state = tmp_path / "state"
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                os.unlink(state / "latch.intent")
                await wait_for(lambda: "latch_intent_replaced" in d.engine.alarms)
                assert (state / "latch.intent").exists()

                def no_space(data):  # the full save fails: only the intent can carry the trip
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                d.store._atomic_write = no_space
                await trip(d)
                await wait_for(lambda: not w.open_orders() and venue_flat(d, OX_VENUE))
                # What a restart right now (SIGKILL) would load:
                assert LatchStore(state).load().state is LatchState.TRIPPED
            nursery.cancel_scope.cancel()


async def test_a_replaced_intent_file_is_alarmed_and_the_reopen_verb_clears_it():
    with short_tmpdir() as root, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w = await start_ox(nursery)
            text = daemon_yaml(root, w.venue_yaml())
            async with _daemon_with_control(root, text, w.env()) as d:
                intent = root / "state" / "latch.intent"
                os.rename(intent, root / "state" / "latch.intent.old")
                await wait_for(lambda: "latch_intent_replaced" in d.engine.alarms)
                sock = str(d.config.daemon.control_socket)
                code = await trio.to_thread.run_sync(cli_main, ["reopen", "--socket", sock])  # the CLI verb
                assert code == 0
                assert "latch_intent_replaced" not in d.engine.alarms
                async with AsyncControlClient(sock) as c:
                    reply = await c.request({"op": "reopen"})
                assert reply["ok"] and reply["intent"] == str(intent)
            nursery.cancel_scope.cancel()
