"""Which orders a drift poll counts as stream drift (pure)."""

from killswitch.engine.drift import DriftTracker
from killswitch.model import OrderInfo


def order(oid: str, ts_ms: int = 0) -> OrderInfo:
    return OrderInfo("v", "P", oid, ts_event_ms=ts_ms)


def test_an_old_unreported_order_is_drift_at_once_a_fresh_one_waits_a_poll():
    t = DriftTracker(grace_ms=2000)
    assert t.on_poll("v", [order("old", 1000), order("new", 9500)], {}, 10_000) == ("old",)
    assert t.on_poll("v", [order("new", 9500)], {"new": 1}, 15_000) == ("new",)  # still never pushed


def test_an_order_the_stream_reports_between_polls_is_not_drift():
    t = DriftTracker()
    assert t.on_poll("v", [order("a")], {}, 0) == ()
    t.stream_reported("v", "a", 0.0)
    assert t.on_poll("v", [order("a")], {"a": 1}, 0) == ()


def test_known_orders_and_a_reconnect_clear_the_evidence():
    t = DriftTracker()
    assert t.on_poll("v", [order("a"), order("k")], {"k": 1}, 0) == ()
    t.forget("v")
    assert t.on_poll("v", [order("a")], {"a": 1}, 0) == ()


def test_pending_ids_are_bounded():
    t = DriftTracker(max_ids=3)
    t.on_poll("v", [order(str(i)) for i in range(10)], {}, 0)
    assert len(t.on_poll("v", [order(str(i)) for i in range(10)], {}, 0)) == 3


def test_a_reported_order_missing_from_a_stale_poll_is_still_not_drift_later():
    t = DriftTracker(grace_ms=2000)
    t.stream_reported("v", "x", 10.0)
    assert t.recently_reported("v", 11.0) == ["x"]  # a poll without it may predate it: keep it
    assert t.recently_reported("v", 12.5) == []
    assert t.on_poll("v", [order("x", 1000)], {}, 20_000) == ()  # the stream did report it


def test_reported_ids_are_bounded():
    t = DriftTracker(max_ids=3)
    for i in range(10):
        t.stream_reported("v", str(i), float(i))
    assert t.recently_reported("v", 9.0) == ["9", "8", "7"]
