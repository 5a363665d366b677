"""Rule kind name -> (config parser, rule class).

Adding a rule kind is one module in this package (a frozen ``RuleConfig`` subclass, a
``parse_config(reader, common)`` function and a rule class taking that config) plus one
line here. The mapping is read-only: no module-level mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from killswitch.rules import (
    drawdown,
    manual,
    max_open_orders,
    max_position,
    order_rate,
    reject_burst,
    stale_heartbeat,
    stream_drift,
)


@dataclass(frozen=True, slots=True)
class RuleKind:
    # (MapReader, common keys already parsed) -> RuleConfig subclass, issues go to the reader.
    parse: Callable[[Any, dict[str, Any]], Any]
    rule_class: type


RULE_KINDS: Mapping[str, RuleKind] = MappingProxyType(
    {
        "drawdown": RuleKind(drawdown.parse_config, drawdown.DrawdownRule),
        "stale_heartbeat": RuleKind(stale_heartbeat.parse_config, stale_heartbeat.StaleHeartbeatRule),
        "max_open_orders": RuleKind(max_open_orders.parse_config, max_open_orders.MaxOpenOrdersRule),
        "order_rate": RuleKind(order_rate.parse_config, order_rate.OrderRateRule),
        "max_position": RuleKind(max_position.parse_config, max_position.MaxPositionRule),
        "reject_burst": RuleKind(reject_burst.parse_config, reject_burst.RejectBurstRule),
        "manual": RuleKind(manual.parse_config, manual.ManualRule),
        "stream_drift": RuleKind(stream_drift.parse_config, stream_drift.StreamDriftRule),
    }
)
