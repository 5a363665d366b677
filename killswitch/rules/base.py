"""The contract between the engine and a rule.

A rule is pure and incremental: it keeps its own small state, is told about the events it
declares interest in (``watches``), and answers ``Breach | None``. It never awaits, never
reads a clock (``now_s`` is passed in), and never rescans the book: it asks the engine's
:class:`BookView` for O(1) counters.

Fail closed: the engine treats any exception escaping ``on_event``/``on_tick`` as a breach
of that rule (logged with the rule's name) — see ``killswitch.engine.loop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from killswitch.model import Breach, CancelScope


class BookView(Protocol):
    """Read-only O(1) queries on the engine's per-venue book (engine/state.py)."""

    def open_count(self, venue: str | None = None, product: str | None = None) -> int: ...

    def position_qty(self, venue: str, product: str) -> Decimal: ...

    def mark_price(self, venue: str, product: str) -> Decimal | None: ...

    def is_connected(self, venue: str) -> bool: ...

    def last_seen_s(self, venue: str) -> float | None: ...

    def venues(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """What ``killswitch status`` and the metrics show for a rule."""

    name: str
    kind: str
    observed: str  # human-readable current value ("-3.10%", "412 open", "stale 12.0s")
    threshold: str
    observed_value: Decimal | None = None  # numeric form for metrics (None when n/a)
    threshold_value: Decimal | None = None
    breached: bool = False


class RuleBase:
    """What every rule copies from its config entry (the engine reads these per event)."""

    def __init__(self, config) -> None:
        self.config = config
        self.name: str = config.name
        self.kind: str = config.kind
        self.latch: bool = config.latch
        self.action_scope: CancelScope = config.action_scope


@runtime_checkable
class Rule(Protocol):
    name: str
    kind: str
    latch: bool
    # Which event classes (from killswitch.model) this rule wants in on_event.
    watches: frozenset[type]
    # Whether on_tick must be called (absence rules, debounce-by-duration, windows).
    needs_tick: bool
    # What a breach cancels (already restricted to the rule's venues).
    action_scope: CancelScope

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None: ...

    def on_tick(self, book: BookView, now_s: float) -> Breach | None: ...

    def status(self, book: BookView, now_s: float) -> RuleStatus: ...
