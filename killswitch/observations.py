"""Latency histograms and per-venue counts the engine records for the metrics endpoint.

Pure and cheap: the engine calls ``observe`` on its hot path (every event's receive-to-engine
lag), so a histogram is a tuple of upper bounds, a list of counts and a sum — one ``bisect``
and two additions, no locks, no Prometheus objects. The metrics collector turns a snapshot
into Prometheus histograms at scrape time. One ``Observations`` per engine; nothing global.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Upper bounds in seconds. Trip latencies: the trip bench measures 0.5-5 ms to the first
# cancel and 10-50 ms to flat; the top buckets catch rate-limited and retried trips.
TRIP_BOUNDS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Engine event lag is normally tens of microseconds; a backlog shows as milliseconds and up.
LAG_BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# One cancel request, sent to reply (websocket or REST).
CANCEL_BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class Histogram:
    """Non-cumulative bucket counts; ``counts[i]`` holds observations <= ``bounds_s[i]``
    (and above the previous bound); the last entry counts those above every bound."""

    bounds_s: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds_s) + 1)

    def observe(self, value_s: float) -> None:
        # On the engine's per-event path: one bisect, two additions (the count is derived).
        self.counts[bisect_left(self.bounds_s, value_s)] += 1
        self.sum_s += value_s

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: ``(le, cumulative count)`` ending with ``+Inf``."""
        out, running = [], 0
        for bound, n in zip(self.bounds_s, self.counts):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", self.count))
        return out


@dataclass(slots=True)
class Observations:
    event_lag: Histogram = field(default_factory=lambda: Histogram(LAG_BOUNDS_S))
    trip_to_first_cancel: dict[str, Histogram] = field(default_factory=dict)  # venue ->
    trip_to_flat: dict[str, Histogram] = field(default_factory=dict)
    cancel_round_trip: dict[str, Histogram] = field(default_factory=dict)
    connects: dict[str, int] = field(default_factory=dict)  # venue -> VenueConnected seen

    def first_cancel(self, venue: str, seconds: float) -> None:
        _get(self.trip_to_first_cancel, venue, TRIP_BOUNDS_S).observe(seconds)

    def flat(self, venue: str, seconds: float) -> None:
        _get(self.trip_to_flat, venue, TRIP_BOUNDS_S).observe(seconds)

    def cancel_completed(self, venue: str, seconds: float) -> None:
        _get(self.cancel_round_trip, venue, CANCEL_BOUNDS_S).observe(seconds)

    def connected(self, venue: str) -> None:
        self.connects[venue] = self.connects.get(venue, 0) + 1

    def reconnects(self, venue: str) -> int:
        """Connections after the first: each one followed a lost connection."""
        return max(self.connects.get(venue, 0) - 1, 0)


def _get(table: dict[str, Histogram], venue: str, bounds_s: tuple[float, ...]) -> Histogram:
    h = table.get(venue)
    if h is None:
        h = table[venue] = Histogram(bounds_s)
    return h
