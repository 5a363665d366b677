"""Stream drift: open orders a drift poll finds that the account stream never reported. Pure.

A poll can race a push (the order was placed a moment ago and its push is in flight), so an
unreported order counts as drift only when the venue's own timestamp says it is older than
``grace_ms`` at the poll, or, without a timestamp, when the next poll still finds it and the
stream has still not reported it. Bounded: at most ``max_pending`` ids wait per venue.
"""

from __future__ import annotations

from typing import Iterable

from killswitch.model import OrderInfo

DRIFT_GRACE_MS = 2_000
MAX_PENDING = 10_000


class DriftTracker:
    def __init__(self, grace_ms: int = DRIFT_GRACE_MS, max_pending: int = MAX_PENDING) -> None:
        self.grace_ms = grace_ms
        self.max_pending = max_pending
        self._pending: dict[str, set[str]] = {}

    def stream_reported(self, venue: str, order_id: str) -> None:
        pending = self._pending.get(venue)
        if pending:
            pending.discard(order_id)

    def forget(self, venue: str) -> None:
        """A reconnect reconciles from scratch: nothing found before it is evidence any more."""
        self._pending.pop(venue, None)

    def on_poll(self, venue: str, orders: Iterable[OrderInfo], known_ids, poll_ts_ms: int) -> tuple[str, ...]:
        """Order ids the stream should have reported by now (drift); the rest wait one poll."""
        before = self._pending.get(venue, set())
        drifted, waiting = [], set()
        for o in orders:
            oid = o.venue_order_id
            if oid in before:
                drifted.append(oid)  # found by the last poll too, and the stream still has not said a word
                continue
            if oid in known_ids:
                continue
            if o.ts_event_ms > 0 and poll_ts_ms > 0 and poll_ts_ms - o.ts_event_ms >= self.grace_ms:
                drifted.append(oid)
            elif len(waiting) < self.max_pending:
                waiting.add(oid)
        self._pending[venue] = waiting
        return tuple(drifted)
