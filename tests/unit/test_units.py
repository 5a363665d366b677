from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from killswitch.units import (
    Amount,
    UnitError,
    format_duration,
    parse_amount,
    parse_decimal,
    parse_duration,
    parse_duration_decimal,
    parse_percent,
)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", Decimal(30)),
        ("5m", Decimal(300)),
        ("1h", Decimal(3600)),
        ("250ms", Decimal("0.250")),
        ("1h30m", Decimal(5400)),
        ("1m30s500ms", Decimal("90.5")),
        ("2d", Decimal(172800)),
        ("0.1s", Decimal("0.1")),
        (" 10s ", Decimal(10)),
        (5, Decimal(5)),
        (0.1, Decimal("0.1")),
        ("2.5", Decimal("2.5")),
        ("0s", Decimal(0)),
    ],
)
def test_parse_duration_exact(text, seconds):
    assert parse_duration_decimal(text) == seconds
    assert parse_duration(text) == float(seconds)


@pytest.mark.parametrize("bad", ["-1s", "-5", -3, "5x", "s", "", "1h-30m", "ms", "1e3s", True, None, [1], "nan", "inf"])
def test_parse_duration_rejects(bad):
    with pytest.raises(UnitError):
        parse_duration(bad)


@pytest.mark.parametrize(
    "text, frac",
    [("2%", Decimal("0.02")), ("5%", Decimal("0.05")), ("0.5%", Decimal("0.005")), ("100%", Decimal(1)), (" 7 %", Decimal("0.07"))],
)
def test_parse_percent(text, frac):
    assert parse_percent(text) == frac


@pytest.mark.parametrize("bad", ["5", 5, 0.05, "%", "five%", "5%%", None])
def test_parse_percent_rejects(bad):
    with pytest.raises(UnitError):
        parse_percent(bad)


@pytest.mark.parametrize(
    "value, amount",
    [
        ("50000 USD", Amount(Decimal(50000), "USD")),
        ("1.5 OX", Amount(Decimal("1.5"), "OX")),
        ("2000", Amount(Decimal(2000), None)),
        (2000, Amount(Decimal(2000), None)),
        ("10 usd", Amount(Decimal(10), "USD")),
        ("1_000_000 USD", Amount(Decimal(1000000), "USD")),
    ],
)
def test_parse_amount(value, amount):
    got = parse_amount(value)
    assert got == amount
    assert isinstance(got.value, Decimal)


@pytest.mark.parametrize("bad", ["USD", "1 2 USD", "abc USD", "5 $$", True, None, [], "1e5 USD"])
def test_parse_amount_rejects(bad):
    with pytest.raises(UnitError):
        parse_amount(bad)


def test_floats_from_yaml_are_taken_at_face_value():
    # 0.1 as a binary float is 0.1000000000000000055...; the human wrote 0.1.
    assert parse_decimal(0.1) == Decimal("0.1")
    assert parse_amount(0.3).value == Decimal("0.3")


def test_amount_str():
    assert str(Amount(Decimal("2000.00"), "USD")) == "2000 USD"
    assert str(Amount(Decimal("0.050"), None)) == "0.05"


@pytest.mark.parametrize("seconds, text", [(0.25, "250ms"), (30, "30s"), (300, "5m"), (3600, "1h"), (90, "90s"), (0, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@given(st.text(max_size=20))
def test_duration_parser_never_crashes(text):
    try:
        value = parse_duration_decimal(text)
    except UnitError:
        return
    assert value >= 0


@given(st.integers(0, 10**6), st.sampled_from(["ms", "s", "m", "h"]))
def test_duration_roundtrip_units(n, unit):
    factor = {"ms": Decimal("0.001"), "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration_decimal(f"{n}{unit}") == n * factor


def test_backoff_delay_is_capped_exponential_with_bounded_jitter():
    import random

    from killswitch.venues.base import BackoffConfig

    b = BackoffConfig(initial_s=0.25, max_s=15.0, multiplier=2.0, jitter=0.2)
    rng = random.Random(7)
    for attempt, base in ((0, 0.25), (1, 0.5), (3, 2.0), (10, 15.0), (60, 15.0)):
        for _ in range(50):
            assert base * 0.8 <= b.delay_s(attempt, rng) <= base * 1.2
    assert BackoffConfig(jitter=0.0).delay_s(-1) == BackoffConfig().initial_s  # a negative attempt is the first


def test_reconnect_backoff_grows_while_connections_fail_and_restarts_after_a_long_one():
    from killswitch.venues.base import BackoffConfig, ReconnectBackoff

    backoff = ReconnectBackoff(BackoffConfig(initial_s=1.0, max_s=8.0, jitter=0.0))
    assert [backoff.next_delay_s(0.1) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.next_delay_s(8.0) == 8.0  # exactly max_s is still a flap
    assert backoff.next_delay_s(8.5) == 1.0  # up longer than the longest delay: start again
    assert backoff.next_delay_s(0.0) == 2.0
