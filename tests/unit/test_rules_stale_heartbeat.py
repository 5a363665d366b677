import pytest

from killswitch.model import HeartbeatReceived, VenueConnected, VenueDisconnected
from tests.unit.test_rules_helpers import FakeBook, one_rule


def strategy_rule(extra=""):
    return one_rule(f"""
rules:
  - name: hb
    kind: stale_heartbeat
    source: {{strategy: alpha}}
    timeout: 5s
{extra}""")


def venue_rule(extra=""):
    return one_rule(f"""
rules:
  - name: feed
    kind: stale_heartbeat
    source: {{venue: ox}}
    timeout: 5s
    venues: [ox]
{extra}""")


def test_flags():
    rule = strategy_rule()
    assert rule.needs_tick and rule.watches == frozenset({HeartbeatReceived})


@pytest.mark.parametrize("last_hb, now, stale", [(10.0, 14.9, False), (10.0, 15.0, True), (10.0, 20.0, True)])
def test_strategy_timeout_boundary(last_hb, now, stale):
    rule, book = strategy_rule(), FakeBook()
    rule.on_tick(book, 0.0)
    rule.on_event(HeartbeatReceived("alpha"), book, last_hb)
    assert (rule.on_tick(book, now) is not None) == stale


def test_other_sources_do_not_count():
    rule, book = strategy_rule(), FakeBook()
    rule.on_tick(book, 0.0)
    rule.on_event(HeartbeatReceived("beta"), book, 4.0)
    assert rule.on_tick(book, 5.0) is not None


@pytest.mark.parametrize(
    "extra, now, stale",
    [
        ("", 4.9, False),
        ("", 5.0, True),  # grace defaults to timeout
        ("    grace: 30s\n", 29.9, False),
        ("    grace: 30s\n", 30.0, True),
    ],
)
def test_never_seen_source_uses_grace_from_creation(extra, now, stale):
    rule, book = strategy_rule(extra), FakeBook()
    assert rule.on_tick(book, 0.0) is None  # creation time
    b = rule.on_tick(book, now)
    assert (b is not None) == stale
    if stale:
        assert "never seen" in b.observed


def test_heartbeats_keep_it_alive():
    rule, book = strategy_rule(), FakeBook()
    rule.on_tick(book, 0.0)
    for t in range(0, 100, 4):
        rule.on_event(HeartbeatReceived("alpha"), book, float(t))
        assert rule.on_tick(book, t + 3.9) is None


@pytest.mark.parametrize("seen_at, now, stale", [(1.0, 5.9, False), (1.0, 6.0, True)])
def test_venue_last_seen(seen_at, now, stale):
    rule, book = venue_rule(), FakeBook()
    rule.on_tick(book, 0.0)
    book.connected["ox"] = True
    book.seen["ox"] = seen_at
    assert (rule.on_tick(book, now) is not None) == stale


def test_venue_disconnected_for_timeout_is_stale_even_if_seen_recently():
    rule, book = venue_rule(), FakeBook()
    rule.on_tick(book, 0.0)
    book.connected["ox"] = True
    book.seen["ox"] = 1.0
    rule.on_event(VenueDisconnected("ox", "1006", ts_recv_s=1.0), book, 1.0)
    book.connected["ox"] = False
    book.seen["ox"] = 5.0  # e.g. a failing reconnect loop still produces signs of life
    assert rule.on_tick(book, 5.9) is None
    b = rule.on_tick(book, 6.0)
    assert b is not None and "disconnected" in b.observed
    rule.on_event(VenueConnected("ox"), book, 6.1)
    book.connected["ox"] = True
    book.seen["ox"] = 6.1
    assert rule.on_tick(book, 7.0) is None


def test_venue_never_seen_grace():
    rule, book = venue_rule("    grace: 20s\n"), FakeBook()
    rule.on_tick(book, 100.0)
    assert rule.on_tick(book, 119.0) is None
    b = rule.on_tick(book, 120.0)
    assert b is not None and b.scope.venues == frozenset({"ox"})


def test_status():
    rule, book = strategy_rule(), FakeBook()
    st = rule.status(book, 0.0)
    assert not st.breached and st.observed_value is None
    rule.on_event(HeartbeatReceived("alpha"), book, 1.0)
    st = rule.status(book, 3.0)
    assert not st.breached and "2.0s" in st.observed
    assert rule.status(book, 7.0).breached
