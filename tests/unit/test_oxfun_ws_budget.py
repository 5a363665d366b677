"""The OX.FUN session's WS message budget keeps every *receipt* window within the venue's
50 messages/s, although the venue counts on arrival and arrivals jitter.

Found by bench/trip_latency.py: back-to-back trips paced by a plain 50-per-1 s budget drew
`20007 You are accessing server too rapidly` about once in 300 trips (the retry then waited out
the 1 s block), because a send a few ms late lands in the next receipt window with 50 others.
Sends are admitted exactly as ``_ws_send`` admits them, by the session's own budget object;
the venue side counts as the simulator does (per connection, 1 s).
"""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.clock import Clock
from killswitch.secrets import Secret, SecretRef
from killswitch.venues.base import OxfunConfig, RateBudget
from killswitch.venues.oxfun.session import WS_MSGS_PER_S, OxfunSession

MAX_JITTER_S = 0.099


def session_ws_budget() -> RateBudget:
    cfg = OxfunConfig(name="ox", api_key=SecretRef("env", "K"), api_secret=SecretRef("env", "S"),
                      ws_url="ws://127.0.0.1:9/v2/websocket", rest_url="http://127.0.0.1:9")
    return OxfunSession(cfg, api_key=Secret("k"), api_secret=Secret("s"), clock=Clock())._ws_budget


def refusals(ours: RateBudget, seed: int, n: int = 400) -> int:
    """Send n messages as fast as ``ours`` admits (random extra gaps), deliver each up to
    MAX_JITTER_S late in order; count what a venue counting 50 per 1 s on arrival refuses."""
    rng = random.Random(seed)
    venue = RateBudget([(1.0, WS_MSGS_PER_S)])
    t_send = t_recv = 0.0
    refused = 0
    for _ in range(n):
        t_send += rng.choice((0.0, 0.0, rng.uniform(0, 0.02)))
        t_send += ours.wait_s(1, t_send)  # _ws_send sleeps exactly this long, then charges
        ours.charge(1, t_send)
        t_recv = max(t_recv, t_send + rng.uniform(0, MAX_JITTER_S))  # one TCP stream keeps order
        refused += not venue.try_charge(1, t_recv)
    return refused


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_sends_admitted_by_the_session_budget_are_never_refused_by_the_venue_under_jitter(seed):
    assert refusals(session_ws_budget(), seed) == 0


def test_a_plain_one_second_budget_is_refused_under_the_same_jitter():
    """The property is not vacuous: a budget counting the venue's own 1 s window is refused."""
    assert sum(refusals(RateBudget([(1.0, WS_MSGS_PER_S)]), seed) > 0 for seed in range(20)) >= 10
