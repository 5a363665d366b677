from killswitch.model import EquityObserved, Side
from tests.unit.test_rules_helpers import FakeBook, load_rules


def test_manual_never_breaches_and_documents_scope():
    config, rules = load_rules("""
rules:
  - name: operator
    kind: manual
    venues: [ox]
    keep_protective_stops: true
    action: {cancel_orders: {products: [BTC-USD-SWAP-LIN], sides: [buy]}}
""")
    (rule,) = rules
    book = FakeBook()
    assert rule.on_event(EquityObserved("ox", 0), book, 0.0) is None
    assert rule.on_tick(book, 1e9) is None
    scope = rule.action_scope
    assert scope.venues == frozenset({"ox"}) and scope.products == frozenset({"BTC-USD-SWAP-LIN"})
    assert scope.sides == frozenset({Side.BUY}) and scope.by_id_only and scope.keep_protective_stops
    assert config.manual_rule.name == "operator"
    assert not rule.status(book, 0.0).breached


def test_no_manual_rule():
    config, _ = load_rules("rules: []\n")
    assert config.manual_rule is None
