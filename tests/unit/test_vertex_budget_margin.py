"""The Nado session's wallet budget keeps every window *as the venue counts it* (on arrival)
within the limits, although arrivals jitter: a refusal (1000) costs a 10 s hold, so the session
counts each window WINDOW_MARGIN_S longer. The venue side is the simulator's own budget."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.venues.base import RateBudget
from killswitch.venues.vertex import session as nado
from killswitch.venues.vertex.sim import core as sim_core

MAX_JITTER_S = 0.099


def refusals(ours: RateBudget, seed: int, n: int = 300) -> int:
    rng = random.Random(seed)
    venue = RateBudget(sim_core.WALLET_LIMITS)
    t_send = t_recv = 0.0
    refused = 0
    for _ in range(n):
        weight = rng.choice((1, 2, 5, 50))
        t_send += rng.choice((0.0, rng.uniform(0, 0.5)))
        t_send += ours.wait_s(weight, t_send)
        ours.charge(weight, t_send)
        t_recv = max(t_recv, t_send + rng.uniform(0, MAX_JITTER_S))
        refused += not venue.try_charge(weight, t_recv)
    return refused


def test_the_session_counts_the_venues_limits_over_longer_windows():
    assert nado.VENUE_WALLET_LIMITS == sim_core.WALLET_LIMITS
    assert all(w == vw + nado.WINDOW_MARGIN_S and cap == vcap
               for (w, cap), (vw, vcap) in zip(nado.WALLET_LIMITS, nado.VENUE_WALLET_LIMITS))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_requests_admitted_by_the_session_budget_are_never_refused_under_jitter(seed):
    assert refusals(RateBudget(nado.WALLET_LIMITS), seed) == 0


def test_without_the_margin_the_venue_refuses_under_the_same_jitter():
    assert sum(refusals(RateBudget(nado.VENUE_WALLET_LIMITS), seed) > 0 for seed in range(30)) >= 5
