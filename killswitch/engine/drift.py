"""Stream drift: open orders a drift poll finds that the account stream never reported. Pure.

A poll races the stream both ways. An order placed a moment ago may be in the poll's reply
before its push arrives, so an unreported order counts as drift only when the venue's own
timestamp says it is older than ``grace_ms`` at the poll, or, without a timestamp, when the
next poll still finds it and the stream has still not reported it. And a push may overtake
a poll reply computed before the order existed, so orders the stream reported within the
last ``grace_ms`` survive a poll that lacks them (:meth:`recently_reported`); the next poll
or the order's own close event settles them.

Bounded: at most ``max_ids`` ids are remembered per venue (reported and pending alike).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from killswitch.model import OrderInfo

DRIFT_GRACE_MS = 2_000
MAX_IDS = 10_000


class DriftTracker:
    def __init__(self, grace_ms: int = DRIFT_GRACE_MS, max_ids: int = MAX_IDS) -> None:
        self.grace_ms = grace_ms
        self.max_ids = max_ids
        self._pending: dict[str, set[str]] = {}
        self._reported: dict[str, OrderedDict[str, float]] = {}  # venue -> order id -> now_s reported

    def stream_reported(self, venue: str, order_id: str, now_s: float) -> None:
        pending = self._pending.get(venue)
        if pending:
            pending.discard(order_id)
        seen = self._reported.setdefault(venue, OrderedDict())
        seen[order_id] = now_s
        seen.move_to_end(order_id)
        while len(seen) > self.max_ids:
            seen.popitem(last=False)

    def forget(self, venue: str) -> None:
        """A reconnect reconciles from scratch: nothing found before it is evidence any more."""
        self._pending.pop(venue, None)

    def recently_reported(self, venue: str, now_s: float) -> list[str]:
        """Ids the stream reported within the grace: a poll without them may predate them."""
        seen = self._reported.get(venue)
        if not seen:
            return []
        horizon = now_s - self.grace_ms / 1000
        out = []
        for oid in reversed(seen):  # newest first; stop at the first old one
            if seen[oid] < horizon:
                break
            out.append(oid)
        return out

    def on_poll(self, venue: str, orders: Iterable[OrderInfo], known_ids, poll_ts_ms: int) -> tuple[str, ...]:
        """Order ids the stream should have reported by now (drift); the rest wait one poll.

        ``known_ids``: the book before this poll (orders from the stream or a reconcile, and
        from earlier polls; the latter are still judged, through the pending set).
        """
        before = self._pending.get(venue, set())
        reported = self._reported.get(venue, {})
        drifted, waiting = [], set()
        for o in orders:
            oid = o.venue_order_id
            if oid in reported:
                continue
            if oid in before:
                drifted.append(oid)  # found by the last poll too, and the stream still has not said a word
                continue
            if oid in known_ids:
                continue
            if o.ts_event_ms > 0 and poll_ts_ms > 0 and poll_ts_ms - o.ts_event_ms >= self.grace_ms:
                drifted.append(oid)
            elif len(waiting) < self.max_ids:
                waiting.add(oid)
        self._pending[venue] = waiting
        return tuple(drifted)
