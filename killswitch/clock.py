"""Injected time. Pure code takes ``now`` as an argument; the trio shell asks a Clock.

``monotonic_s`` is ``trio.current_time()`` so tests under ``autojump_clock`` control it;
``wall_ms`` is the wall clock in ms, offset-able to simulate skew between the daemon
and a venue (signing timestamps and recv_time nonces are wall-clock based).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import trio


@dataclass(slots=True)
class Clock:
    wall_offset_ms: int = 0

    def monotonic_s(self) -> float:
        return trio.current_time()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.wall_offset_ms


@dataclass(slots=True)
class TrioWallClock(Clock):
    """Wall time that follows trio's clock, for tests under autojump_clock.

    ``wall_ms`` = ``epoch_ms`` + elapsed trio time, so virtual time jumps move the wall
    clock too (recv_time windows, HMAC timestamp windows, stale timeouts all agree).
    """

    epoch_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z

    def wall_ms(self) -> int:
        return self.epoch_ms + int(trio.current_time() * 1000) + self.wall_offset_ms
