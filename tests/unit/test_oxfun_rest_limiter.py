"""OX.FUN's per-IP REST limiter keeps a share of every window for cancels."""

from __future__ import annotations

from killswitch.venues.oxfun.session import REST_ORDINARY_SHARE, REST_REQ_PER_S, RestLimiter


def test_polls_stop_at_their_share_and_cancels_still_fit():
    lim = RestLimiter()
    now = 100.0
    sent = 0
    while lim.wait_s(now, cancel=False) == 0:
        lim.charge(now, cancel=False)
        sent += 1
    assert sent == int(REST_REQ_PER_S * REST_ORDINARY_SHARE)
    cancels = 0
    while lim.wait_s(now, cancel=True) == 0:
        lim.charge(now, cancel=True)
        cancels += 1
    assert cancels == REST_REQ_PER_S - sent  # the cancels' share is all there
    assert lim.wait_s(now, cancel=True) > 0  # and the venue's own cap still holds


def test_cancels_count_against_the_whole_budget_for_polls_too():
    lim = RestLimiter()
    now = 5.0
    for _ in range(REST_REQ_PER_S):
        lim.charge(now, cancel=True)
    assert lim.wait_s(now, cancel=False) > 0
