"""Drawdown never goes blind: missing, stale or incomplete equity is a breach (or, if asked, an alert)."""

from decimal import Decimal as D

import pytest

from killswitch.config import ConfigError, load_config_text
from killswitch.model import EquityObserved, EquityUnavailable
from tests.unit.test_rules_helpers import VENUES_YAML, FakeBook, one_rule


def rule_of(extra: str = "", venues: str = "[ox]"):
    return one_rule(f"""
rules:
  - name: dd
    kind: drawdown
    venues: {venues}
    max_drawdown: 5%
{extra}""")


def test_equity_never_reported_trips_after_the_startup_grace():
    rule, book = rule_of(), FakeBook()
    assert rule.on_tick(book, 0.0) is None
    assert rule.on_tick(book, 59.9) is None
    b = rule.on_tick(book, 60.0)
    assert b is not None and b.latch and "no equity from ox" in b.observed
    assert rule.status(book, 60.0).breached


def test_stale_equity_trips_after_max_equity_age_and_fresh_equity_clears_it():
    rule, book = rule_of("    max_equity_age: 10s\n"), FakeBook()
    assert rule.on_event(EquityObserved("ox", D(100)), book, 0.0) is None
    assert rule.on_tick(book, 9.9) is None
    b = rule.on_tick(book, 10.0)
    assert b is not None and "10.0s old" in b.observed
    assert rule.on_event(EquityObserved("ox", D(100)), book, 11.0) is None  # restored
    assert rule.on_tick(book, 12.0) is None


def test_on_missing_alarm_is_an_alert_that_never_latches():
    rule, book = rule_of("    on_missing: alarm\n    startup_grace: 5s\n"), FakeBook()
    rule.on_tick(book, 0.0)
    b = rule.on_tick(book, 5.0)
    assert b is not None and b.latch is False


def test_on_missing_must_be_trip_or_alarm():
    with pytest.raises(ConfigError, match="on_missing"):
        load_config_text(VENUES_YAML + "rules:\n  - {name: d, kind: drawdown, max_drawdown: 5%, on_missing: ignore}\n")


def test_incomplete_valuation_is_missing_not_a_smaller_equity_and_names_the_asset():
    rule, book = rule_of("    startup_grace: 5s\n"), FakeBook()
    rule.on_tick(book, 0.0)
    assert rule.on_event(EquityUnavailable("ox", ("BTC",)), book, 1.0) is None
    assert "BTC" in rule.status(book, 2.0).observed
    b = rule.on_tick(book, 5.0)
    assert b is not None and "no price for BTC" in b.observed


def test_incomplete_valuation_after_a_good_equity_goes_stale():
    rule, book = rule_of("    max_equity_age: 3s\n"), FakeBook()
    rule.on_event(EquityObserved("ox", D(100)), book, 0.0)
    rule.on_event(EquityUnavailable("ox", ("BTC",)), book, 1.0)
    b = rule.on_tick(book, 3.0)
    assert b is not None and "no price for BTC" in b.observed


def test_aggregate_with_a_silent_member_counts_as_missing():
    rule, book = rule_of("    aggregate: true\n    startup_grace: 5s\n", venues="[ox, nd]"), FakeBook()
    rule.on_tick(book, 0.0)
    for t in range(5):
        assert rule.on_event(EquityObserved("ox", D(100 - 20 * t)), book, float(t)) is None  # nd never reports
    b = rule.on_tick(book, 5.0)
    assert b is not None and "nd" in b.observed and "aggregate" in b.observed


def test_missing_alert_does_not_flap_on_other_venues_events():
    rule, book = rule_of("    on_missing: alarm\n    startup_grace: 1s\n", venues="[ox, nd]"), FakeBook()
    rule.on_tick(book, 0.0)
    rule.on_event(EquityObserved("ox", D(100)), book, 0.5)
    assert rule.on_tick(book, 1.0) is not None  # nd missing
    # An ox event while nd is still missing keeps saying so (the engine would clear the alert on None).
    assert rule.on_event(EquityObserved("ox", D(100)), book, 1.1) is not None
    rule.on_event(EquityObserved("nd", D(100)), book, 1.2)
    assert rule.on_event(EquityObserved("ox", D(100)), book, 1.3) is None


@pytest.mark.parametrize("bare", ["5", "0.05", "2000"])
def test_bare_number_threshold_is_refused_suggesting_both_spellings(bare):
    with pytest.raises(ConfigError) as exc:
        load_config_text(VENUES_YAML + f"rules:\n  - {{name: d, kind: drawdown, max_drawdown: {bare}}}\n")
    msg = str(exc.value)
    assert "rules[0].max_drawdown" in msg and f"{bare}%" in msg and f"{bare} USD" in msg
