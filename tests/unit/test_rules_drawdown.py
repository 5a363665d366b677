from decimal import Decimal as D

import pytest

from killswitch.model import CashFlowObserved, EquityObserved, EquityUnavailable
from killswitch.rules.base import Rule
from tests.unit.test_rules_helpers import FakeBook, one_rule

DAY_MS = 86_400_000


def dd_rule(extra: str = "", threshold: str = "5%"):
    return one_rule(f"""
rules:
  - name: dd
    kind: drawdown
    max_drawdown: {threshold}
{extra}""")


def feed(rule, book, values, venue="ox", t0=0.0, dt=1.0, ts_ms=None):
    """Feed equities; return the breaches (None or Breach) per observation."""
    out = []
    for i, v in enumerate(values):
        ev = EquityObserved(venue, D(str(v)), "USD", ts_event_ms=ts_ms[i] if ts_ms else 0)
        out.append(rule.on_event(ev, book, t0 + i * dt))
    return out


def test_is_a_rule():
    rule = dd_rule()
    assert isinstance(rule, Rule)
    assert rule.watches == frozenset({EquityObserved, CashFlowObserved, EquityUnavailable})


@pytest.mark.parametrize(
    "threshold, values, breached",
    [
        ("5%", [100, 95], True),  # exactly at threshold breaches
        ("5%", [100, "95.01"], False),  # just below
        ("5%", [100, 120, 114], True),  # peak moved up to 120: 5% of 120 = 6
        ("5%", [100, 120, "114.01"], False),
        ("2000 USD", [10000, 8000], True),
        ("2000 USD", [10000, "8000.01"], False),
        ("100%", [100, 0], True),
        ("100%", [100, "0.01"], False),
    ],
)
def test_threshold_table(threshold, values, breached):
    rule, book = dd_rule(threshold=threshold), FakeBook()
    results = feed(rule, book, values)
    assert all(r is None for r in results[:-1])
    assert (results[-1] is not None) == breached


def test_breach_carries_scope_and_text():
    rule, book = dd_rule(extra="    venues: [ox]\n    latch: false\n"), FakeBook()
    b = feed(rule, book, [100, 90])[-1]
    assert b.rule == "dd" and b.kind == "drawdown" and b.latch is False
    assert b.scope.venues == frozenset({"ox"})
    assert "10.00%" in b.observed and b.threshold == "-5%"


def test_other_venue_and_uncovered_venue_are_separate_series():
    rule, book = dd_rule(extra="    venues: [ox]\n"), FakeBook()
    assert feed(rule, book, [100], venue="ox") == [None]
    assert feed(rule, book, [50, 10], venue="nd") == [None, None]  # not covered
    rule2 = dd_rule()
    assert feed(rule2, book, [100], "ox") == [None]
    assert feed(rule2, book, [200], "nd") == [None]
    assert feed(rule2, book, [190], "nd")[0] is not None  # nd's own peak 200


def test_debounce_count():
    rule, book = dd_rule(extra="    debounce: {count: 3}\n"), FakeBook()
    r = feed(rule, book, [100, 90, 90, 96, 90, 90, 90])
    assert [x is not None for x in r] == [False, False, False, False, False, False, True]


def test_debounce_duration_on_events_and_ticks():
    rule, book = dd_rule(extra="    debounce: {duration: 2s}\n"), FakeBook()
    assert rule.needs_tick
    assert rule.on_event(EquityObserved("ox", D(100)), book, 0.0) is None
    assert rule.on_event(EquityObserved("ox", D(90)), book, 1.0) is None
    assert rule.on_tick(book, 2.9) is None
    assert rule.on_tick(book, 3.0) is not None  # breaching continuously since 1.0
    # recovery resets the clock
    assert rule.on_event(EquityObserved("ox", D(99)), book, 3.5) is None
    assert rule.on_event(EquityObserved("ox", D(90)), book, 4.0) is None
    assert rule.on_tick(book, 5.9) is None
    assert rule.on_event(EquityObserved("ox", D(90)), book, 6.0) is not None


def test_rolling_peak_slides_out():
    rule, book = dd_rule(extra="    peak: {rolling: 10s}\n"), FakeBook()
    assert rule.on_event(EquityObserved("ox", D(100)), book, 0.0) is None
    assert rule.on_event(EquityObserved("ox", D(97)), book, 5.0) is None
    # at t=10 the 100 observation has slid out: peak is 97, 93 is -4.1%
    assert rule.on_event(EquityObserved("ox", D(93)), book, 10.0) is None
    # within the window, 100 still counts
    rule2 = dd_rule(extra="    peak: {rolling: 10s}\n")
    rule2.on_event(EquityObserved("ox", D(100)), book, 0.0)
    assert rule2.on_event(EquityObserved("ox", D(93)), book, 9.9) is not None


def test_rolling_window_keeps_monotonic_deque_small():
    rule, book = dd_rule(extra="    peak: {rolling: 1000s}\n"), FakeBook()
    for i in range(1000):
        rule.on_event(EquityObserved("ox", D(1000 + i)), book, float(i))
    assert len(rule._series["ox"].window) == 1  # rising series: only the newest survives


def test_rolling_latest_observation_never_expires():
    rule, book = dd_rule(extra="    venues: [ox]\n    peak: {rolling: 10s}\n    debounce: {duration: 1s}\n    max_equity_age: 1h\n"), FakeBook()
    rule.on_event(EquityObserved("ox", D(100)), book, 0.0)
    rule.on_event(EquityObserved("ox", D(90)), book, 1.0)
    assert rule.on_tick(book, 2.0) is not None
    assert rule.on_tick(book, 100.0) is None  # the 100 peak slid out; 90 is its own peak


def test_daily_reset_uses_event_wall_time():
    rule, book = dd_rule(extra='    peak: {daily_reset: "08:00"}\n'), FakeBook()
    day0_7h = 7 * 3_600_000
    day0_9h = 9 * 3_600_000
    assert feed(rule, book, [100], ts_ms=[day0_7h]) == [None]
    # 08:00 passed: the peak restarts from the first observation of the new period
    assert feed(rule, book, [94, 93], t0=1, ts_ms=[day0_9h, day0_9h + 1]) == [None, None]
    # and losing 5% from that new peak breaches
    assert feed(rule, book, [D("89.3")], t0=3, ts_ms=[day0_9h + 2])[0] is not None
    # without the reset, 94 after 100 would have breached immediately
    rule2 = dd_rule()
    assert feed(rule2, book, [100, 94])[-1] is not None


def test_daily_reset_ignores_events_without_wall_time():
    rule, book = dd_rule(extra='    peak: {daily_reset: "00:00"}\n'), FakeBook()
    assert feed(rule, book, [100], ts_ms=[DAY_MS - 1]) == [None]
    assert feed(rule, book, [94], ts_ms=[0])[0] is not None  # ts 0 = unknown: no reset


@pytest.mark.parametrize(
    "flow, after, breached",
    [
        (-50, 50, False),  # withdrawal: 100 -> 50 is not a loss
        (-50, D("47.5"), True),  # ...but 5% of what remains is
        (-50, D("47.51"), False),
        (+50, 150, False),  # deposit: the deposit is not profit...
        (+50, D("142.5"), True),  # ...and 5% below (100+50) breaches
        (+50, D("142.6"), False),
    ],
)
def test_cash_flows_shift_the_peak(flow, after, breached):
    rule, book = dd_rule(), FakeBook()
    rule.on_event(EquityObserved("ox", D(100)), book, 0.0)
    assert rule.on_event(CashFlowObserved("ox", D(flow), "USD"), book, 1.0) is None
    assert (rule.on_event(EquityObserved("ox", D(after)), book, 2.0) is not None) == breached


def test_cash_flow_before_first_equity_and_amount_threshold():
    rule, book = dd_rule(threshold="10 USD"), FakeBook()
    rule.on_event(CashFlowObserved("ox", D(500), "USD"), book, 0.0)
    rule.on_event(EquityObserved("ox", D(600)), book, 1.0)
    rule.on_event(CashFlowObserved("ox", D(-300), "USD"), book, 2.0)
    assert rule.on_event(EquityObserved("ox", D(291)), book, 3.0) is None
    assert rule.on_event(EquityObserved("ox", D(290)), book, 4.0) is not None


def test_rolling_window_entries_shift_with_flows():
    rule, book = dd_rule(extra="    peak: {rolling: 1h}\n"), FakeBook()
    rule.on_event(EquityObserved("ox", D(100)), book, 0.0)
    rule.on_event(EquityObserved("ox", D(98)), book, 1.0)
    rule.on_event(CashFlowObserved("ox", D(-60), "USD"), book, 2.0)
    assert rule.on_event(EquityObserved("ox", D(39)), book, 3.0) is None  # 39 vs peak 40 (-2.5%)
    assert rule.on_event(EquityObserved("ox", D(38)), book, 4.0) is not None  # -5%


@pytest.mark.parametrize(
    "values, breached",
    [
        ([0, 0], False),
        ([0, -1], True),  # any loss below a non-positive peak is total
        ([-5, -3], False),
        ([-5, -6], True),
    ],
)
def test_non_positive_peak_has_no_division_by_zero(values, breached):
    rule, book = dd_rule(), FakeBook()
    assert (feed(rule, book, values)[-1] is not None) == breached
    rule.status(book, 10.0)


def test_aggregate_waits_for_every_venue():
    rule, book = dd_rule(extra="    aggregate: true\n"), FakeBook()
    assert rule.on_event(EquityObserved("ox", D(100)), book, 0.0) is None
    assert rule.on_event(EquityObserved("ox", D(10)), book, 1.0) is None  # nd not reported yet
    assert rule.on_event(EquityObserved("nd", D(100)), book, 2.0) is None  # peak 110
    assert rule.on_event(EquityObserved("nd", D(95)), book, 3.0) is None  # 105 / 110 = -4.5%
    b = rule.on_event(EquityObserved("ox", D(9)), book, 4.0)  # 104 / 110 = -5.45%
    assert b is not None and "aggregate" in b.detail


def test_aggregate_flow_on_a_venue_that_has_not_re_reported():
    rule, book = dd_rule(extra="    aggregate: true\n"), FakeBook()
    rule.on_event(EquityObserved("ox", D(100)), book, 0.0)
    rule.on_event(EquityObserved("nd", D(100)), book, 1.0)
    rule.on_event(CashFlowObserved("ox", D(-80), "USD"), book, 2.0)
    # nd reports first: ox's last equity is taken as already shifted by the withdrawal
    assert rule.on_event(EquityObserved("nd", D(100)), book, 3.0) is None
    assert rule.on_event(EquityObserved("ox", D(20)), book, 4.0) is None


def test_currency_mismatch_fails_closed():
    rule, book = dd_rule(threshold="100 USD"), FakeBook()
    with pytest.raises(ValueError):
        rule.on_event(EquityObserved("ox", D(100), "OX"), book, 0.0)


def test_status():
    rule, book = dd_rule(), FakeBook()
    st = rule.status(book, 0.0)
    assert st.observed.startswith("no equity yet") and not st.breached and st.threshold_value == D("0.05")
    feed(rule, book, [100, 96])
    st = rule.status(book, 2.0)
    assert st.observed_value == D("0.04") and not st.breached and "4.00%" in st.observed
    feed(rule, book, [95], t0=3)
    assert rule.status(book, 4.0).breached


def test_cash_flow_currency_label_is_not_judged():
    # DeclareCashFlow becomes CashFlowObserved with the default currency; the flow is taken
    # in the venue's equity currency rather than tripping on a label.
    rule, book = dd_rule(threshold="10%"), FakeBook()
    rule.on_event(EquityObserved("nd", D(100), "OX"), book, 0.0)
    rule.on_event(CashFlowObserved("nd", D(-50)), book, 1.0)
    assert rule.on_event(EquityObserved("nd", D("45.5"), "OX"), book, 2.0) is None
