import pytest

from killswitch.model import OpenOrdersSnapshot, OrderInfo, OrderOpened
from tests.unit.test_rules_helpers import FakeBook, one_rule


def rule_with(keys: str):
    return one_rule(f"""
rules:
  - name: moo
    kind: max_open_orders
{keys}""")


def opened(venue="ox", product="BTC"):
    return OrderOpened(OrderInfo(venue, product, "1"))


@pytest.mark.parametrize("count, breached", [(99, False), (100, False), (101, True)])
def test_per_venue(count, breached):
    rule, book = rule_with("    max: 100\n"), FakeBook()
    book.counts[("ox", None)] = count
    assert (rule.on_event(opened(), book, 0.0) is not None) == breached


@pytest.mark.parametrize("count, breached", [(5, False), (6, True)])
def test_per_product(count, breached):
    rule, book = rule_with("    max_per_product: 5\n"), FakeBook()
    book.counts[("ox", "BTC")] = count
    book.counts[("ox", None)] = 1000  # no per-venue limit set
    assert (rule.on_event(opened(), book, 0.0) is not None) == breached


def test_snapshot_checks_each_product():
    rule, book = rule_with("    max: 100\n    max_per_product: 2\n"), FakeBook()
    book.counts[("ox", "ETH")] = 3
    snap = OpenOrdersSnapshot("ox", (OrderInfo("ox", "BTC", "1"), OrderInfo("ox", "ETH", "2")))
    b = rule.on_event(snap, book, 0.0)
    assert b is not None and "ETH" in b.observed


def test_uncovered_venue_ignored():
    rule, book = rule_with("    max: 1\n    venues: [nd]\n"), FakeBook()
    book.counts[("ox", None)] = 50
    assert rule.on_event(opened("ox"), book, 0.0) is None


def test_status():
    rule, book = rule_with("    max: 10\n"), FakeBook()
    book.counts[("nd", None)] = 11
    st = rule.status(book, 0.0)
    assert st.breached and st.observed_value == 11 and st.threshold_value == 10
