"""Cash flows cannot neutralise drawdown: absurd flows are refused, accepted ones stay exact."""

from decimal import Decimal as D, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.control.protocol import MAX_FLOW_DECIMALS, RequestError, cash_flow_command
from killswitch.model import CashFlowObserved, EquityObserved
from tests.unit.test_rules_helpers import FakeBook, one_rule

VENUES = frozenset({"ox"})


def flow(amount, equity=D(1000), **kw):
    return cash_flow_command({"venue": "ox", "amount": amount}, known_venues=VENUES, default_operator="op",
                             equity={"ox": equity}, **kw)


def test_flow_larger_than_current_equity_is_refused():
    with pytest.raises(RequestError, match="larger in magnitude than the current equity") as exc:
        flow("-1E+30")
    assert exc.value.code == "flow_too_large"
    with pytest.raises(RequestError, match="larger in magnitude"):
        flow("1000.000001")
    assert flow("-1000").amount == D(-1000)


def test_flow_above_max_cash_flow_is_refused():
    with pytest.raises(RequestError, match="max_cash_flow"):
        flow("600", max_cash_flow=D(500))


def test_flow_on_a_venue_with_no_equity_yet_is_refused():
    with pytest.raises(RequestError, match="no equity yet"):
        flow("-5", equity=None)


def test_flow_with_too_many_decimals_is_refused():
    with pytest.raises(RequestError, match="decimal places"):
        flow("0." + "0" * MAX_FLOW_DECIMALS + "1")


equities = st.decimals(min_value=D("0.01"), max_value=D("1e15"), places=8, allow_nan=False, allow_infinity=False)
fractions = st.decimals(min_value=D("-1"), max_value=D("1"), places=MAX_FLOW_DECIMALS,
                        allow_nan=False, allow_infinity=False).filter(lambda f: f != 0)


@settings(max_examples=200, deadline=None)
@given(equity=equities, fraction=fractions)
def test_no_accepted_flow_can_erase_equity(equity, fraction):
    with localcontext() as ctx:
        ctx.prec = 80  # the test's own arithmetic must be exact too
        amount = (equity * fraction).quantize(D(1).scaleb(-MAX_FLOW_DECIMALS))
        after = equity + amount
        lost = after / 100
    if amount == 0:
        return
    cmd = flow(str(amount), equity=equity)  # accepted: |amount| <= equity
    rule, book = one_rule("rules:\n  - {name: dd, kind: drawdown, venues: [ox], max_drawdown: 5%}\n"), FakeBook()
    assert rule.on_event(EquityObserved("ox", equity), book, 0.0) is None
    rule.on_event(CashFlowObserved("ox", cmd.amount), book, 1.0)
    # The flow itself is never a loss...
    assert rule.on_event(EquityObserved("ox", after), book, 2.0) is None
    # ...and a real 99% loss of what is left still trips (the equity was not rounded away).
    if after > 0:
        assert rule.on_event(EquityObserved("ox", lost), book, 3.0) is not None


def test_max_cash_flow_is_a_daemon_setting():
    from killswitch.config import load_config_text
    from tests.unit.test_rules_helpers import VENUES_YAML

    cfg = load_config_text("daemon:\n  max_cash_flow: 5000\n" + VENUES_YAML + "rules: []\n")
    assert cfg.daemon.max_cash_flow == D(5000)
    with pytest.raises(Exception, match="max_cash_flow"):
        load_config_text("daemon:\n  max_cash_flow: -1\n" + VENUES_YAML + "rules: []\n")
