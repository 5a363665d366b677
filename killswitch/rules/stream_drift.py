"""stream_drift: trip when a drift poll finds orders the account stream never reported.

Such orders mean the stream is stalled or lossy while the socket still looks healthy. The
engine always alarms (``stream_drift:<venue>``), counts it and reconnects the stream; this
rule lets a risk manager also cancel on it. ``min_orders`` (default 1): how many unreported
orders one poll must find.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from killswitch.model import Breach, StreamDriftDetected
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader
from killswitch.schema.rule import RuleConfig


@dataclass(frozen=True, kw_only=True)
class StreamDriftConfig(RuleConfig):
    min_orders: int = 1

    def describe(self) -> str:
        return f"a drift poll finds >= {self.min_orders} open orders the account stream never reported"


def parse_config(r: MapReader, common: dict) -> StreamDriftConfig | None:
    min_orders = r.int("min_orders", 1, min_value=1)
    return StreamDriftConfig(**common, min_orders=min_orders if isinstance(min_orders, int) else 1)


class StreamDriftRule(RuleBase):
    watches = frozenset({StreamDriftDetected})
    needs_tick = False

    def __init__(self, config: StreamDriftConfig) -> None:
        super().__init__(config)
        self._last: dict[str, int] = {}

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        if not isinstance(event, StreamDriftDetected) or not self.config.covers_venue(event.venue):
            return None
        n = len(event.order_ids)
        self._last[event.venue] = n
        if n < self.config.min_orders:
            return None
        return self.config.breach(f"{n} open orders on {event.venue} never reported by its stream",
                                  f">= {self.config.min_orders}", detail=f"venue {event.venue}")

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        return None

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        worst = max(self._last.values(), default=0)
        text = "no drift seen" if not self._last else f"last drift polls: {dict(sorted(self._last.items()))}"
        return RuleStatus(self.name, self.kind, text, f">= {self.config.min_orders}", Decimal(worst),
                          Decimal(self.config.min_orders), False)
