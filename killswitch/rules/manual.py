"""manual: the action used by manual trips (``killswitch trip``, SIGUSR1).

It never breaches by itself; it only documents *what* a manual trip cancels (its
``action_scope``: venues, products, sides, protective stops). At most one per config; with
none, a manual trip cancels everything everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from killswitch.config import RuleConfig

from killswitch.schema.reader import MapReader
from killswitch.model import Breach
from killswitch.rules.base import BookView, RuleStatus


@dataclass(frozen=True, kw_only=True)
class ManualConfig(RuleConfig):
    def describe(self) -> str:
        return "operator trip (killswitch trip / SIGUSR1); never trips by itself"


def parse_config(r: MapReader, common: dict) -> ManualConfig:
    return ManualConfig(**common)


class ManualRule:
    watches: frozenset[type] = frozenset()
    needs_tick = False

    def __init__(self, config: ManualConfig) -> None:
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.latch = config.latch
        self.action_scope = config.action_scope

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        return None

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        return None

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        return RuleStatus(self.name, self.kind, "manual only", "operator", None, None, False)
