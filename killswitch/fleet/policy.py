"""What an instance does when it loses the bus: a pure state machine, driven by the shell.

The bus is lost from the moment the connection drops (or from start-up until the first
connection: an instance that never reached the bus is no better off). After
``after_s`` of continuous loss the policy acts once: ``alarm`` (loud, the daemon keeps
guarding on its own rules) or ``trip`` (an instance that cannot hear a fleet trip stops
trading). On reconnect the alarm clears and the shell reconciles with the key-value latch,
so a fleet trip published during the outage trips the instance as it returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

ACTIONS = ("alarm", "trip")


class BusState(enum.Enum):
    UP = "up"
    LOST = "lost"  # down, policy not yet acted
    ACTED = "acted"  # down for longer than after_s, the policy has acted


class Do(enum.Enum):
    ALARM = "alarm"
    TRIP = "trip"
    CLEAR_ALARM = "clear_alarm"
    RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class BusLossPolicy:
    after_s: float = 10.0
    action: str = "alarm"  # alarm | trip

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"on_bus_loss.action must be one of {', '.join(ACTIONS)}")
        if not self.after_s > 0:
            raise ValueError("on_bus_loss.after must be > 0")


class BusWatch:
    def __init__(self, policy: BusLossPolicy, now_s: float) -> None:
        self.policy = policy
        self.state = BusState.LOST
        self.lost_since_s: float | None = now_s
        self.alarmed = False
        self.losses = 0

    def on_connected(self, now_s: float) -> list[Do]:
        out = [Do.RECONCILE]
        if self.alarmed:
            out.insert(0, Do.CLEAR_ALARM)
            self.alarmed = False
        self.state = BusState.UP
        self.lost_since_s = None
        return out

    def on_disconnected(self, now_s: float) -> list[Do]:
        if self.state is BusState.UP:
            self.state = BusState.LOST
            self.lost_since_s = now_s
            self.losses += 1
        return []

    def on_tick(self, now_s: float) -> list[Do]:
        if self.state is not BusState.LOST or self.lost_since_s is None:
            return []
        if now_s - self.lost_since_s < self.policy.after_s:
            return []
        self.state = BusState.ACTED
        # The alarm is raised in both branches: a trip on bus loss is also something to look at.
        self.alarmed = True
        return [Do.ALARM, Do.TRIP] if self.policy.action == "trip" else [Do.ALARM]

    def lost_for_s(self, now_s: float) -> float:
        return 0.0 if self.lost_since_s is None else now_s - self.lost_since_s
