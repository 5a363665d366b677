"""The venue's clock as seen from this host. Pure: callers pass every time in.

Venue time is anchored to the *monotonic* clock, not to the host's wall clock:
``venue_ms = monotonic_ms + offset``, where each sample is
``server_ms - (mono_send_ms + mono_recv_ms) / 2`` and the estimate is the sample with the
lowest round trip among recent ones (its error is at most half its round trip). A step of
the host's wall clock (NTP correction, an operator's ``date -s``) therefore leaves venue
time untouched; only the *skew* reported to the operator (venue time minus host wall time)
moves with it.

Before the first sample there is no estimate and ``venue_ms`` falls back to the host's wall
clock: the session's first request (Nado ``GET /time``, OX.FUN's login reply) takes one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OffsetSample:
    offset_ms: float  # venue ms minus monotonic ms
    rtt_ms: float
    at_mono_ms: float


class VenueClock:
    """Offset estimate from (send, receive, server time) samples; bounded history."""

    __slots__ = ("_samples", "_max_age_ms", "_best")

    def __init__(self, *, max_samples: int = 16, max_age_s: float = 600.0) -> None:
        self._samples: deque[OffsetSample] = deque(maxlen=max_samples)
        self._max_age_ms = max_age_s * 1000.0
        self._best: OffsetSample | None = None  # chosen when a sample arrives: venue_ms is O(1)

    def add(self, *, mono_send_ms: float, mono_recv_ms: float, server_ms: float) -> OffsetSample:
        rtt = max(0.0, mono_recv_ms - mono_send_ms)
        s = OffsetSample(server_ms - (mono_send_ms + mono_recv_ms) / 2.0, rtt, mono_recv_ms)
        self._samples.append(s)
        self._best = self.best(mono_recv_ms)
        return s

    def reset(self) -> None:
        """Forget every sample (the venue refused a timestamp: re-measure from scratch)."""
        self._samples.clear()
        self._best = None

    def best(self, mono_now_ms: float) -> OffsetSample | None:
        horizon = mono_now_ms - self._max_age_ms
        fresh = [s for s in self._samples if s.at_mono_ms >= horizon]
        if not fresh:
            return None
        return min(fresh, key=lambda s: s.rtt_ms)

    @property
    def known(self) -> bool:
        return bool(self._samples)

    def venue_ms(self, *, mono_now_ms: float, wall_now_ms: int) -> int:
        # The best sample as of the last measurement (older than max_age only if no newer
        # one arrived: still better than the host clock, which may have stepped).
        best = self._best
        if best is None:
            return wall_now_ms
        return int(mono_now_ms + best.offset_ms)

    def skew_ms(self, *, mono_now_ms: float, wall_now_ms: int) -> int | None:
        """Venue time minus host wall time (positive: the host clock is behind); None if unknown."""
        if not self._samples:
            return None
        return self.venue_ms(mono_now_ms=mono_now_ms, wall_now_ms=wall_now_ms) - wall_now_ms


def skew_message(skew_ms: int, threshold_ms: int) -> str:
    """The clock_skew alarm's text (the engine prefixes the venue's name)."""
    direction = "behind" if skew_ms > 0 else "ahead of"
    return (f"host clock is {abs(skew_ms) / 1000:.1f} s {direction} the venue's "
            f"(offset {skew_ms:+d} ms, alarm above {threshold_ms} ms); signing uses venue time, "
            f"fix the host's time sync (chrony/systemd-timesyncd)")


@dataclass(frozen=True, slots=True)
class SkewReport:
    """What a session tells the engine about the ``clock_skew`` alarm (raise/refresh or clear)."""

    active: bool
    message: str  # empty when clearing


class SkewAlarm:
    """When to raise, refresh and clear ``clock_skew`` (one per session; pure)."""

    __slots__ = ("threshold_ms", "_raised")

    def __init__(self, threshold_s: float) -> None:
        self.threshold_ms = round(threshold_s * 1000)
        self._raised = False

    def update(self, skew_ms: int | None) -> SkewReport | None:
        """A report while the skew is over the threshold and once when it falls back; None
        otherwise (also while the skew is unknown)."""
        if skew_ms is None:
            return None
        over = abs(skew_ms) > self.threshold_ms
        if not (over or self._raised):
            return None
        self._raised = over
        return SkewReport(over, skew_message(skew_ms, self.threshold_ms) if over else "")
