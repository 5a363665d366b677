"""reject_burst: trip when a venue rejects too many of the account's orders in a window.

A burst of rejects is the signature of a strategy stuck in a loop (bad price, no margin,
rate-limited) and about to get the account banned. Counts ``OrderRejected`` per venue;
``max`` is the largest number allowed within any sliding ``window`` (``max + 1`` breaches).
"""

from __future__ import annotations

from dataclasses import dataclass

from killswitch.model import OrderRejected
from killswitch.rules.order_rate import WindowCountRule, WindowLimitConfig, parse_window_limit
from killswitch.schema.reader import MapReader
from killswitch.units import format_duration


@dataclass(frozen=True, kw_only=True)
class RejectBurstConfig(WindowLimitConfig):
    def describe(self) -> str:
        return f"more than {self.max} rejected orders within {format_duration(self.window_s)} on one venue"


def parse_config(r: MapReader, common: dict) -> RejectBurstConfig | None:
    return RejectBurstConfig(**common, **parse_window_limit(r))


class RejectBurstRule(WindowCountRule):
    watches = frozenset({OrderRejected})
    noun = "rejects"

    def _venue_of(self, event: object) -> str | None:
        return event.venue if isinstance(event, OrderRejected) else None
