from decimal import Decimal as D

import pytest

from killswitch.model import MarkPriceObserved, PositionObserved
from tests.unit.test_rules_helpers import FakeBook, one_rule


def pos_rule(keys):
    return one_rule(f"""
rules:
  - name: pos
    kind: max_position
{keys}""")


@pytest.mark.parametrize(
    "qty, breached", [("10", False), ("10.0001", True), ("-10", False), ("-10.5", True)]
)
def test_max_qty(qty, breached):
    rule, book = pos_rule("    max_qty: 10\n"), FakeBook()
    assert (rule.on_event(PositionObserved("ox", "BTC", D(qty)), book, 0.0) is not None) == breached


@pytest.mark.parametrize(
    "notional, mark, breached",
    [
        (D(50000), None, False),
        (D("50000.01"), None, True),
        (None, D(25000), False),  # 2 * 25000 = 50000: at the limit
        (None, D("25000.01"), True),
        (None, None, False),  # unknown: the notional limit cannot judge
    ],
)
def test_max_notional(notional, mark, breached):
    rule, book = pos_rule("    max_notional: 50000 USD\n"), FakeBook()
    if mark is not None:
        book.marks[("ox", "BTC")] = mark
    ev = PositionObserved("ox", "BTC", D(-2), notional=notional)
    assert (rule.on_event(ev, book, 0.0) is not None) == breached


def test_mark_move_rejudges_position():
    rule, book = pos_rule("    max_notional: 1000\n"), FakeBook()
    book.positions[("nd", "2")] = D(1)
    assert rule.on_event(MarkPriceObserved("nd", "2", D(999)), book, 0.0) is None
    assert rule.on_event(MarkPriceObserved("nd", "2", D(1001)), book, 1.0) is not None


def test_product_filter():
    rule, book = pos_rule("    max_qty: 1\n    products: [2, BTC]\n"), FakeBook()
    assert rule.on_event(PositionObserved("ox", "ETH", D(5)), book, 0.0) is None
    assert rule.on_event(PositionObserved("nd", "2", D(5)), book, 0.0) is not None


def test_status():
    rule, book = pos_rule("    max_qty: 10\n"), FakeBook()
    assert not rule.status(book, 0.0).breached
    rule.on_event(PositionObserved("ox", "BTC", D(5)), book, 0.0)
    st = rule.status(book, 0.0)
    assert st.observed_value == D("0.5") and not st.breached
