"""manual: the action used by manual trips (``killswitch trip``, SIGUSR1).

It never breaches by itself; it only documents *what* a manual trip cancels (its
``action_scope``: venues, products, sides, protective stops). At most one per config; with
none, a manual trip cancels everything everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from killswitch.model import Breach
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader
from killswitch.schema.rule import RuleConfig


@dataclass(frozen=True, kw_only=True)
class ManualConfig(RuleConfig):
    def describe(self) -> str:
        return "operator trip (killswitch trip / SIGUSR1); never trips by itself"


def parse_config(r: MapReader, common: dict) -> ManualConfig:
    return ManualConfig(**common)


class ManualRule(RuleBase):
    watches: frozenset[type] = frozenset()
    needs_tick = False

    def __init__(self, config: ManualConfig) -> None:
        super().__init__(config)

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        return None

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        return None

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        return RuleStatus(self.name, self.kind, "manual only", "operator", None, None, False)
