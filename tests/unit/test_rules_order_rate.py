import pytest

from killswitch.model import OrderInfo, OrderOpened, OrderRejected
from tests.unit.test_rules_helpers import FakeBook, one_rule


def rate_rule(kind="order_rate"):
    return one_rule(f"""
rules:
  - name: r
    kind: {kind}
    max: 3
    window: 1s
""")


def new(venue="ox", is_new=True):
    return OrderOpened(OrderInfo(venue, "BTC", "1"), is_new=is_new)


@pytest.mark.parametrize(
    "times, breach_at",
    [
        ([0.0, 0.1, 0.2], None),  # exactly max: allowed
        ([0.0, 0.1, 0.2, 0.3], 3),  # max + 1 within the window
        ([0.0, 0.1, 0.2, 1.0], None),  # the first one slid out at exactly window
        ([0.0, 0.1, 0.2, 0.99], 3),
        ([0.0, 0.5, 1.2, 1.4, 1.6], None),
        ([0.0, 0.5, 1.2, 1.4, 1.45], 4),
    ],
)
def test_order_rate_window(times, breach_at):
    rule, book = rate_rule(), FakeBook()
    results = [rule.on_event(new(), book, t) for t in times]
    hits = [i for i, r in enumerate(results) if r is not None]
    assert hits[:1] == ([] if breach_at is None else [breach_at])


def test_order_rate_counts_only_new_orders_and_per_venue():
    rule, book = rate_rule(), FakeBook()
    for t in (0.0, 0.1, 0.2):
        assert rule.on_event(new("ox"), book, t) is None
    assert rule.on_event(new("ox", is_new=False), book, 0.3) is None
    assert rule.on_event(new("nd"), book, 0.4) is None
    assert rule.on_event(new("ox"), book, 0.5) is not None


def test_reject_burst():
    rule, book = rate_rule("reject_burst"), FakeBook()
    assert rule.watches == frozenset({OrderRejected})
    for t in (0.0, 0.2, 0.4):
        assert rule.on_event(OrderRejected("ox", "20001"), book, t) is None
    b = rule.on_event(OrderRejected("ox", "20001"), book, 0.6)
    assert b is not None and "4 rejects" in b.observed
    assert rule.on_event(new(), book, 0.7) is None  # not a reject


def test_status_window_slides():
    rule, book = rate_rule(), FakeBook()
    for t in (0.0, 0.1, 0.2, 0.3):
        rule.on_event(new(), book, t)
    assert rule.status(book, 0.5).breached
    st = rule.status(book, 1.15)
    assert not st.breached and st.observed_value == 2


def test_deque_stays_bounded():
    rule, book = rate_rule(), FakeBook()
    for i in range(10_000):
        rule.on_event(new(), book, i * 0.5)
    assert rule.status(book, 5000.0).observed_value <= 2
