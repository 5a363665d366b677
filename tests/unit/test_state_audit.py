"""Book counters stay consistent; the audit log is append-only JSONL and fsync'd."""

from decimal import Decimal

import trio

from killswitch.audit import AuditLog, read_audit
from killswitch.engine.state import BookState
from killswitch.model import (
    OpenOrdersSnapshot, OrderClosed, OrderFilled, OrderInfo, OrderOpened, VenueConnected, VenueDisconnected,
)
from killswitch.secrets import Secret


def o(oid, product="P", venue="v"):
    return OrderInfo(venue, product, oid)


def test_counters_follow_opens_closes_fills_and_snapshots():
    s = BookState(("v",))
    assert s.apply(OrderOpened(o("1")), 0) is True
    assert s.apply(OrderOpened(o("1")), 0) is False  # re-seen, not new
    s.apply(OrderOpened(o("2", "Q")), 0)
    assert (s.open_count(), s.open_count("v"), s.open_count("v", "P"), s.open_count("v", "Q")) == (2, 2, 1, 1)
    s.apply(OrderFilled("v", "P", "1", None, Decimal(1), Decimal(1), remaining=Decimal(0)), 0)
    assert s.open_count("v", "P") == 0
    s.apply(OrderClosed("v", "Q", "2"), 0)
    s.apply(OrderClosed("v", "Q", "unknown"), 0)  # closing an unknown order is harmless
    assert s.open_count() == 0
    # A partial snapshot only replaces the products it covers.
    s.apply(OrderOpened(o("3", "P")), 0)
    s.apply(OrderOpened(o("4", "Q")), 0)
    s.apply(OpenOrdersSnapshot("v", (o("5", "P"),), frozenset({"P"}), "poll"), 0)
    assert sorted(x.venue_order_id for x in s.open_orders("v")) == ["4", "5"]
    assert s.open_count() == 2


def test_trust_follows_reconcile_and_disconnect():
    s = BookState(("v",))
    s.apply(VenueConnected("v"), 1.0)
    assert not s.book("v").trusted
    s.apply(OpenOrdersSnapshot("v", (), None, "reconcile"), 1.0)
    assert s.book("v").trusted and s.is_connected("v") and s.last_seen_s("v") == 1.0
    s.apply(VenueDisconnected("v", "1006"), 2.0)
    assert not s.book("v").trusted and not s.is_connected("v")


async def test_audit_appends_fsyncs_and_never_prints_secrets(tmp_path):
    with trio.fail_after(10):
        path = tmp_path / "a" / "audit.jsonl"
        audit = AuditLog(path, wall_ms=lambda: 123)
        audit.open()
        audit.record("trip", rule="dd", secret=Secret("hunter2-very-secret"), amount=Decimal("1.50"))
        await audit.flush()
        audit.record("reset", operator="alice")
        audit.close()
        recs = read_audit(path)
        assert [r["event"] for r in recs] == ["trip", "reset"]
        assert recs[0]["seq"] == 1 and recs[1]["seq"] == 2 and recs[0]["ts_wall_ms"] == 123
        assert recs[0]["amount"] == "1.50"
        assert "hunter2" not in path.read_text()
        # Append-only across restarts.
        audit2 = AuditLog(path, wall_ms=lambda: 124)
        audit2.open()
        audit2.record("daemon_start")
        audit2.close()
        assert len(read_audit(path)) == 3


def test_records_reach_the_file_before_any_flush(tmp_path):
    """write() happens in record(): a SIGKILL right after loses nothing (fsync comes later)."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, wall_ms=lambda: 1)
    audit.open()
    audit.record("cancel_sent", venue="v", nonce="1")
    assert [r["event"] for r in read_audit(path)] == ["cancel_sent"]  # no flush, no close yet
    audit.close()
