"""Hyperliquid WS frames and info replies -> engine events. Pure (timestamps passed in).

``orderUpdates`` and ``userEvents`` carry no ``user``: one connection serves one account,
so whatever arrives on them is this account's. ``userFills`` starts with an
``isSnapshot`` history that is not replayed as fills. Fills are taken from ``userFills``
only (``userEvents`` repeats them).

``orderUpdates`` rows carry no trigger fields (venue doc §8), so the kind of an order is
whatever the last ``frontendOpenOrders`` listing said (:meth:`FeedState.note_listing`);
an order seen only on the stream is of unknown kind (:meth:`FeedState.listed_kind` is None)
and is reported as non-trigger until a listing names it.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from killswitch.model import (
    CloseReason,
    EquityObserved,
    EquityUnavailable,
    OrderClosed,
    OrderFilled,
    OrderInfo,
    OrderOpened,
    OrderRejected,
    PositionObserved,
    Side,
)

from . import wire


def order_info(venue: str, o: wire.OpenOrder) -> OrderInfo:
    return OrderInfo(venue, o.coin, str(o.oid), o.cloid, o.side, o.limit_px, o.sz, o.is_trigger, o.reduce_only,
                     o.timestamp_ms)


def close_reason(status: str) -> CloseReason | None:
    """None while the order is still open (``open``, ``triggered``)."""
    if status in ("open", "triggered"):
        return None
    if status == "filled":
        return CloseReason.FILLED
    if status.endswith("Rejected") or status == "rejected":
        return CloseReason.REJECTED
    if status.endswith("Canceled") or status in ("canceled", "scheduledCancel", "internalCancel"):
        return CloseReason.CANCELED
    return CloseReason.UNKNOWN


class FeedState:
    """What the translation remembers: which coins had a position (to report them flat) and
    which open orders the last listing named as triggers or not."""

    __slots__ = ("venue", "_position_coins", "_listed_kinds")

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self._position_coins: set[str] = set()
        self._listed_kinds: dict[str, bool] = {}  # oid (and cloid) -> is_trigger

    def note_listing(self, rows: list[wire.OpenOrder]) -> None:
        """The venue's current open orders (``frontendOpenOrders``): bounded by its order cap."""
        kinds = {str(o.oid): o.is_trigger for o in rows}
        kinds.update((o.cloid, o.is_trigger) for o in rows if o.cloid)
        self._listed_kinds = kinds

    def listed_kind(self, venue_order_id: str) -> bool | None:
        """True / False as the last listing named the order (by oid or cloid); None: unknown."""
        return self._listed_kinds.get(venue_order_id.lower())

    def clearinghouse(self, state: wire.ClearinghouseState, spot_usd: Decimal, ts_ms: int, ts_s: float,
                      *, polled: bool = False, unpriced: tuple[str, ...] = ()) -> list:
        """``polled``: from POST /info, not the stream (a poll is no proof the stream is alive).
        ``unpriced``: spot coins held with no price: the equity is missing, not smaller."""
        out: list = [EquityUnavailable(self.venue, unpriced, ts_ms, ts_s) if unpriced
                     else EquityObserved(self.venue, state.account_value + spot_usd, "USD", ts_ms, ts_s)]
        seen = set()
        for p in state.positions:
            seen.add(p.coin)
            out.append(PositionObserved(self.venue, p.coin, p.szi, p.position_value, ts_ms, ts_s, polled=polled))
        for coin in self._position_coins - seen:
            out.append(PositionObserved(self.venue, coin, Decimal(0), Decimal(0), ts_ms, ts_s, polled=polled))
        self._position_coins = seen
        return out

    def frame(self, f: wire.WsFrame, *, spot_usd: Decimal, now_ms: int, ts_s: float,
              unpriced: tuple[str, ...] = ()) -> list:
        """Events for one frame; raises WireError on a malformed one."""
        ch, data = f.channel, f.data
        v = self.venue
        if ch == "orderUpdates":
            out: list = []
            for i, upd in enumerate(data if isinstance(data, list) else ()):
                if not isinstance(upd, dict) or not isinstance(upd.get("status"), str):
                    raise wire.WireError(f"orderUpdates[{i}]: no status")
                o = wire.parse_open_order(upd.get("order"))
                ts = wire.ms_of(upd.get("statusTimestamp"), f"orderUpdates[{i}].statusTimestamp") or now_ms
                reason = close_reason(upd["status"])
                if reason is None:
                    info = order_info(v, o)
                    if self._listed_kinds.get(info.venue_order_id):  # a trigger the listing named
                        info = replace(info, is_trigger=True)
                    out.append(OrderOpened(info, ts_s, is_new=upd["status"] == "open"))
                else:
                    out.append(OrderClosed(v, o.coin, str(o.oid), reason, ts, ts_s))
                    if reason is CloseReason.REJECTED:
                        out.append(OrderRejected(v, upd["status"], "", o.coin, ts, ts_s))
            if not isinstance(data, list):
                raise wire.WireError("orderUpdates: data is not a list")
            return out
        if ch == "userFills":
            if not isinstance(data, dict):
                raise wire.WireError("userFills: data is not an object")
            if data.get("isSnapshot"):
                return []
            return [self._fill(x, ts_s) for x in data.get("fills") or ()]
        if ch == "user":
            if not isinstance(data, dict):
                raise wire.WireError("user: data is not an object")
            out = []
            for c in data.get("nonUserCancel") or ():
                out.append(OrderClosed(v, str(c.get("coin")), str(c.get("oid")), CloseReason.CANCELED, now_ms, ts_s))
            return out
        if ch == "clearinghouseState":
            if not isinstance(data, dict):
                raise wire.WireError("clearinghouseState: data is not an object")
            state = wire.parse_clearinghouse_state(data.get("clearinghouseState"))
            return self.clearinghouse(state, spot_usd, state.time_ms or now_ms, ts_s, unpriced=unpriced)
        return []

    def _fill(self, x: Any, ts_s: float) -> OrderFilled:
        if not isinstance(x, dict):
            raise wire.WireError("fill is not an object")
        side = x.get("side")
        return OrderFilled(self.venue, str(x.get("coin")), str(x.get("oid")),
                           Side.BUY if side == "B" else Side.SELL if side == "A" else None,
                           wire.decimal_of(x.get("sz"), "fill.sz"), wire.decimal_of(x.get("px"), "fill.px"), None,
                           wire.ms_of(x.get("time"), "fill.time"), ts_s)
