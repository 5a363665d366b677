"""RateBudget: the O(1) per-window sums agree with a naive recount of every window."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from killswitch.venues.base import RateBudget

LIMITS = [(1.0, 5), (10.0, 12)]


def naive_used(log, window_s, now_s):
    return sum(w for t, w in log if t > now_s - window_s)


def naive_available(log, now_s, reserve=0):
    return min(cap - naive_used(log, w, now_s) for w, cap in LIMITS) - reserve


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3, allow_nan=False), st.integers(1, 4)), max_size=60))
@example([(2.0156715838782017e-187, 1), (0.5, 1), (0.5, 4)])  # t + window rounded to now: wait was 0
def test_matches_naive_model(steps):
    b = RateBudget(LIMITS, reserve=2)
    log = []
    now = 0.0
    for dt, w in steps:
        now += dt
        assert b.available(now) == naive_available(log, now)
        assert b.available(now, for_cancel=False) == naive_available(log, now, reserve=2)
        for win, _cap in LIMITS:
            assert b.used(win, now) == naive_used(log, win, now)
        wait = b.wait_s(w, now)
        fits = w <= naive_available(log, now)
        assert (wait == 0) == fits
        if 0 < wait < float("inf"):
            # after waiting exactly that long, it fits; a hair earlier it does not
            assert w <= naive_available(log, now + wait + 1e-9)
            assert w > naive_available(log, now + wait - 1e-6)
        if b.try_charge(w, now):
            log.append((now, w))


def test_weight_larger_than_a_cap_never_fits():
    b = RateBudget(LIMITS)
    assert b.wait_s(6, 0.0) == float("inf")


def test_charge_ignores_limits_and_counts():
    b = RateBudget([(1.0, 2)])
    for _ in range(3):
        b.charge(1, 0.5)
    assert b.available(0.5) == -1
    assert b.wait_s(1, 0.5) == pytest.approx(1.0)
    assert b.available(1.5) == 2


def test_unknown_window_is_an_error():
    with pytest.raises(ValueError):
        RateBudget(LIMITS).used(3.0, 0.0)
