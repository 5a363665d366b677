"""#11.1 / #11.2: a full disk under the state dir never stops the kill switch.

Both ways the issue asks for: an injected ``OSError(ENOSPC)`` at the audit write site, and a
real full filesystem (a small tmpfs mounted by the test; skipped with the reason when not
root). Oracle: the simulator's own book (every order cancelled), the daemon still running,
the ``audit_unwritable`` / ``latch_persist`` alarms while the disk is full, and, once space
returns, every audit record present once and in order and ``latch.json`` holding the trip.
"""

from __future__ import annotations

import trio

from killswitch.audit import AuditLog
from killswitch.engine.latch import INTENT_RECORD_BYTES, LatchStore
from killswitch.metrics import make_registry, render

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
from .statefs import enospc, fill, small_fs

N = 20


async def _world(nursery, tmp_path):
    w = await start_ox(nursery)
    await w.place(N // 2, OX_MARKETS[0])
    await w.place(N - N // 2, OX_MARKETS[1], side="SELL", price="999999")
    return w, daemon_yaml(tmp_path, w.venue_yaml())


def _flat(w, d) -> bool:
    return not w.open_orders() and venue_flat(d, OX_VENUE)


def _assert_every_seq_once_in_order(recs: list[dict]) -> None:
    seqs = [r["seq"] for r in recs]
    assert seqs == list(range(1, len(seqs) + 1)), f"gaps or duplicates: {seqs[:50]}"


# ------------------------------------------------------------------------------ the audit log alone


async def test_failed_audit_writes_wait_in_memory_and_are_written_in_order_when_space_returns(tmp_path):
    with trio.fail_after(10):
        audit = AuditLog(tmp_path / "audit.jsonl", wall_ms=lambda: 1, retry_s=0.01)
        audit.open()
        audit.record("before")
        audit._write = enospc  # the disk fills up
        for i in range(100):
            assert audit.record("during", i=i)  # never raises
        await audit.flush()
        assert audit.problem and "No space left on device" in audit.problem
        assert audit.queued == 100
        audit._write = __import__("os").write  # space returns
        await audit.flush()
        assert audit.problem is None and audit.queued == 0
        audit.close()
        recs = read_audit_strict(audit.path)
        assert [r["event"] for r in recs] == ["before"] + ["during"] * 100
        _assert_every_seq_once_in_order(recs)


async def test_audit_queue_is_bounded_dropping_the_oldest_and_counting_them(tmp_path):
    with trio.fail_after(10):
        audit = AuditLog(tmp_path / "audit.jsonl", wall_ms=lambda: 1, max_queued=50)
        audit.open()
        audit._write = enospc
        for i in range(200):
            audit.record("r", i=i)
        assert audit.queued == 50 and audit.dropped == 150
        audit._write = __import__("os").write
        await audit.flush()
        audit.close()
        recs = read_audit_strict(audit.path)
        assert [r["i"] for r in recs[:50]] == list(range(150, 200))  # the newest kept, in order
        assert recs[-1]["event"] == "audit_dropped" and recs[-1]["dropped"] == 150


async def test_a_short_write_is_completed_not_torn(tmp_path):
    with trio.fail_after(10):
        import os

        audit = AuditLog(tmp_path / "audit.jsonl", wall_ms=lambda: 1)
        audit.open()
        calls = []

        def half_then_full(fd, data):
            calls.append(1)
            if len(calls) == 1:
                return os.write(fd, bytes(data[:7]))  # the disk had 7 bytes left
            return os.write(fd, data)

        audit._write = half_then_full
        audit.record("torn?", payload="x" * 100)
        await audit.flush()
        audit.close()
        recs = read_audit_strict(audit.path)
        assert [r["event"] for r in recs] == ["torn?"]


# ------------------------------------------------------------------------------ the daemon, injected ENOSPC


async def test_daemon_keeps_guarding_and_alarms_when_audit_writes_fail_with_enospc(tmp_path):
    """Before: OSError(ENOSPC) escaped AuditLog.record at venue_disconnected and the daemon exited 1."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                d.audit._write = enospc
                d.audit._retry_s = 0.05
                await w.sim.drop_connections(w.key)  # the audited event that used to crash it
                await wait_for(lambda: "audit_unwritable" in d.engine.alarms)
                assert "audit_unwritable" in d.status_line()
                scrape = render(make_registry(d)).decode()
                assert "killswitch_audit_unwritable 1.0" in scrape and "killswitch_alarms 1.0" in scrape
                await trip(d)
                await wait_for(lambda: _flat(w, d))  # the sim's book: every order cancelled
                assert not d.exit_code, "daemon stopped"
                assert d.audit.queued > 0 and d.store.load().tripped
                d.audit._write = __import__("os").write  # space returns
                await wait_for(lambda: "audit_unwritable" not in d.engine.alarms and d.audit.queued == 0)
                await d.audit.flush()
                recs = read_audit_strict(d.config.daemon.audit_log)
            nursery.cancel_scope.cancel()
    _assert_every_seq_once_in_order(recs)
    events = [r["event"] for r in recs]
    for needed in ("venue_disconnected", "trip", "cancel_sent", "flat"):
        assert needed in events, needed
    assert any(r["event"] == "alarm" and r["key"] == "audit_unwritable" for r in recs)
    assert events.index("venue_disconnected") < events.index("trip")


async def test_daemon_starts_and_guards_when_the_audit_log_cannot_be_opened(tmp_path, monkeypatch):
    """Before: an audit log that could not be opened made start-up exit 2 (a crash loop)."""
    import killswitch.audit as audit_mod

    real_open = audit_mod.open_state_file
    fail = {"on": True}

    def open_or_enospc(*a, **kw):
        if fail["on"]:
            enospc()
        return real_open(*a, **kw)

    monkeypatch.setattr(audit_mod, "open_state_file", open_or_enospc)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                assert d.ready.is_set()
                await wait_for(lambda: "audit_unwritable" in d.engine.alarms)
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await trip(d)
                await wait_for(lambda: _flat(w, d))
                fail["on"] = False
                await wait_for(lambda: "audit_unwritable" not in d.engine.alarms)
                await d.audit.flush()
                recs = read_audit_strict(d.config.daemon.audit_log)
            nursery.cancel_scope.cancel()
    assert recs[0]["event"] == "daemon_start"
    _assert_every_seq_once_in_order(recs)
    assert "trip" in [r["event"] for r in recs]


# ------------------------------------------------------------------------------ a real full filesystem


async def test_on_a_real_full_filesystem_the_trip_is_persisted_and_everything_is_cancelled(tmp_path):
    """tmpfs: start, fill the disk to the last byte, lose the feed, trip; then free the space.

    Before: the intent file was 0 bytes, so the trip's pwrite needed a block and failed;
    latch.json was never written and a restart came back ARMED.
    """
    with small_fs(tmp_path / "state", "512k") as fs, trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                assert (fs / "latch.intent").stat().st_size == INTENT_RECORD_BYTES  # preallocated before READY
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                d.audit._retry_s = 0.05
                filler = fill(fs)
                while d.audit.problem is None:  # use up the slack in the audit log's last page
                    d.audit.record("test_padding", pad="x" * 200)
                await w.sim.drop_connections(w.key)
                await wait_for(lambda: "audit_unwritable" in d.engine.alarms)
                await trip(d)
                await wait_for(lambda: _flat(w, d))
                # The trip is on disk although the disk is full: a restart now comes back TRIPPED.
                assert LatchStore(fs).load().tripped
                await wait_for(lambda: "latch_persist" in d.engine.alarms)  # latch.json cannot be saved
                assert not d.exit_code
                filler.unlink()  # space returns
                await wait_for(lambda: not {"latch_persist", "audit_unwritable"} & set(d.engine.alarms))
                assert [t.trip_id for t in LatchStore(fs).load().trips] == [1]
                assert LatchStore(fs).load().trips[0].rule == "manual"  # the full record, not a recovery
                await d.audit.flush()
                recs = read_audit_strict(d.config.daemon.audit_log)
            nursery.cancel_scope.cancel()
    _assert_every_seq_once_in_order(recs)
    events = [r["event"] for r in recs]
    assert events.index("test_padding") < events.index("venue_disconnected") < events.index("trip") \
        < events.index("flat")


async def test_on_a_filesystem_full_before_start_the_daemon_starts_alarms_and_cancels(tmp_path):
    """Before: every restart exited at daemon_start (ENOSPC out of AuditLog.record)."""
    with small_fs(tmp_path / "state", "256k") as fs, trio.fail_after(40):
        fill(fs)
        async with trio.open_nursery() as nursery:
            w, text = await _world(nursery, tmp_path)
            async with running_daemon(tmp_path, text, w.env()) as d:
                assert d.ready.is_set()
                await wait_for(lambda: "audit_unwritable" in d.engine.alarms)
                await wait_for(lambda: "latch_persist" in d.engine.alarms)  # no room for the intent
                assert "latch_persist" in d.status_line()
                await wait_for(lambda: d.engine.state.open_count(OX_VENUE) == N)
                await trip(d)
                await wait_for(lambda: _flat(w, d))
                assert d.engine.latch.tripped and not d.exit_code
            nursery.cancel_scope.cancel()
