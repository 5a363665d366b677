"""Audit records carry ISO-8601 UTC time beside ts_wall_ms, and seq continues across restarts."""

from __future__ import annotations

from datetime import datetime, timezone

import trio

from killswitch import audit as audit_mod
from killswitch.audit import AuditLog, last_seq, read_audit
from tests.component.fakes import FakeSession
from tests.e2e.helpers import inprocess_daemon, short_tmpdir


def _log(path, ms=1_796_171_749_426) -> AuditLog:
    return AuditLog(path, wall_ms=lambda: ms)


def test_records_carry_iso_utc_time_matching_ts_wall_ms(tmp_path):
    for ms in (1_796_171_749_426, 1_796_171_750_007, 0):
        log = _log(tmp_path / f"a{ms}.jsonl", ms)
        log.open()
        log.record("probe")
        log.close()
        rec = read_audit(tmp_path / f"a{ms}.jsonl")[0]
        assert rec["ts_wall_ms"] == ms
        parsed = datetime.strptime(rec["ts_utc"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert round(parsed.timestamp() * 1000) == ms
    assert _log(tmp_path / "x").ts_utc(1_796_171_749_426) == "2026-12-02T00:35:49.426Z"


def test_seq_continues_after_reopening_the_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    first = _log(path)
    first.open()
    assert [first.record("a"), first.record("b"), first.record("c")] == [1, 2, 3]
    first.close()
    second = _log(path)
    second.open()
    assert second.record("d") == 4
    second.close()
    assert [r["seq"] for r in read_audit(path)] == [1, 2, 3, 4]


def test_a_torn_last_line_is_skipped_and_not_glued_to_the_next_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = _log(path)
    log.open()
    log.record("a")
    log.record("b")
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"ts_wall_ms":1,"seq":3,"event":"tor')  # power lost mid-write
    log = _log(path)
    log.open()
    assert log.record("c") == 3
    log.close()
    lines = path.read_bytes().splitlines()
    assert lines[-1].startswith(b'{"ts_wall_ms"') and b'"event":"c"' in lines[-1]
    assert lines[-2].endswith(b'"event":"tor')


def test_records_made_before_open_are_numbered_after_the_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = _log(path)
    log.open()
    log.record("a")
    log.close()
    early = _log(path)
    early.record("before-open")
    early.open()
    assert early.record("after-open") == 3
    early.close()
    assert [(r["event"], r["seq"]) for r in read_audit(path)] == [("a", 1), ("before-open", 2), ("after-open", 3)]


def test_last_seq_reads_backwards_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(audit_mod, "TAIL_CHUNK_BYTES", 64)
    path = tmp_path / "audit.jsonl"
    log = _log(path)
    log.open()
    for i in range(50):
        log.record("r", padding="x" * (i % 7))
    log.close()
    assert last_seq(path) == 50
    with open(path, "ab") as fh:
        fh.write(b"not json at all, " * 20 + b"\n")  # garbage longer than one chunk
    assert last_seq(path) == 50
    assert last_seq(tmp_path / "missing.jsonl") == 0


async def test_a_restarted_daemon_continues_the_sequence():
    with trio.fail_after(30), short_tmpdir() as root:
        async with inprocess_daemon(root, [FakeSession("ox-a")], []) as daemon:
            audit_path = daemon.config.daemon.audit_log
        first = read_audit(audit_path)
        async with inprocess_daemon(root, [FakeSession("ox-a")], []):
            pass
        recs = read_audit(audit_path)
    seqs = [r["seq"] for r in recs]
    assert len(recs) > len(first) and seqs == list(range(1, len(recs) + 1))
    starts = [r for r in recs if r["event"] == "daemon_start"]
    assert len(starts) == 2 and starts[1]["seq"] > first[-1]["seq"]
