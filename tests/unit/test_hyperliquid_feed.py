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


def test_stream_orders_carry_the_kind_the_last_listing_named_and_are_unknown_otherwise():
    """orderUpdates rows have no trigger fields: a trigger the listing named stays one when
    the stream repeats it (a re-push must not turn it into a resting order); an order seen
    only on the stream is of unknown kind until a listing names it."""
    from killswitch.model import OrderOpened, Side

    feed = FeedState("hl")
    cloid = "0x" + "ab" * 16
    feed.note_listing([wire.OpenOrder("ETH", 11, Side.SELL, Decimal(2000), Decimal("0.1"), is_trigger=True),
                       wire.OpenOrder("ETH", 12, Side.BUY, Decimal(2000), Decimal("0.1"), cloid=cloid)])

    def row(oid):
        return {"order": {"coin": "ETH", "side": "A", "limitPx": "2000", "sz": "0.1", "oid": oid,
                          "timestamp": 1, "origSz": "0.1"}, "status": "open", "statusTimestamp": 2}

    events = feed.frame(wire.WsFrame("orderUpdates", [row(11), row(12), row(13)]), spot_usd=Decimal(0),
                        now_ms=3, ts_s=1.0)
    assert [(e.order.venue_order_id, e.order.is_trigger) for e in events if isinstance(e, OrderOpened)] == \
        [("11", True), ("12", False), ("13", False)]
    assert (feed.listed_kind("11"), feed.listed_kind("12"), feed.listed_kind("13")) == (True, False, None)
    assert feed.listed_kind(cloid.upper().replace("0X", "0x")) is False
    feed.note_listing([])  # the next listing replaces the last one: nothing is kept for closed orders
    assert feed.listed_kind("11") is None
