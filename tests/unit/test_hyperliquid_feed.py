"""The Hyperliquid feed tags account state fetched over POST /info as polled, so a poll
never passes for a live stream (the engine's staleness clock counts stream frames only)."""

from __future__ import annotations

from decimal import Decimal

from killswitch.engine.state import BookState
from killswitch.model import PositionObserved
from killswitch.venues.hyperliquid import wire
from killswitch.venues.hyperliquid.feed import FeedState


def _state(*positions: wire.Position) -> wire.ClearinghouseState:
    return wire.ClearinghouseState(Decimal("1000"), positions, 1_700_000_000_000)


def test_polled_clearinghouse_positions_do_not_refresh_stream_liveness():
    feed = FeedState("hl")
    btc = wire.Position("BTC", Decimal("0.5"), Decimal("30000"))
    state = BookState(("hl",))
    for ev in feed.clearinghouse(_state(btc), Decimal(0), 1, 5.0, polled=True):
        state.apply(ev, 5.0)
    # ...and the position that went away is reported flat, polled as well.
    flat = [ev for ev in feed.clearinghouse(_state(), Decimal(0), 2, 6.0, polled=True)
            if isinstance(ev, PositionObserved)]
    for ev in flat:
        state.apply(ev, 6.0)
    assert [(ev.product, ev.qty, ev.polled) for ev in flat] == [("BTC", Decimal(0), True)]
    assert state.book("hl").last_seen_s is None


def test_streamed_clearinghouse_positions_are_not_polled():
    events = FeedState("hl").clearinghouse(_state(wire.Position("ETH", Decimal("-2"), None)), Decimal(0), 1, 5.0)
    positions = [ev for ev in events if isinstance(ev, PositionObserved)]
    assert positions and not any(ev.polled for ev in positions)


SPOT = {"balances": [{"coin": "USDC", "total": "250.5"}, {"coin": "PURR", "total": "1000"},
                     {"coin": "HYPE", "total": "0"}]}


def test_a_spot_coin_held_without_a_price_makes_equity_missing_naming_it():
    """Incomplete valuation is missing equity, never a smaller number (the drawdown rule then
    applies its missing-data policy instead of seeing a loss-free, smaller account)."""
    from killswitch.model import EquityObserved, EquityUnavailable

    assert wire.unpriced_spot(SPOT) == ("PURR",)  # HYPE is zero: nothing unvalued
    assert wire.unpriced_spot(SPOT, {"PURR": Decimal("0.2")}) == ()
    events = FeedState("hl").clearinghouse(_state(), wire.parse_spot_usd(SPOT), 1, 5.0,
                                           unpriced=wire.unpriced_spot(SPOT))
    assert [type(e) for e in events] == [EquityUnavailable] and events[0].missing == ("PURR",)
    priced = FeedState("hl").clearinghouse(_state(), wire.parse_spot_usd(SPOT, {"PURR": Decimal("0.2")}), 1, 5.0)
    assert isinstance(priced[0], EquityObserved) and priced[0].equity == Decimal("1000") + Decimal("250.5") + 200
