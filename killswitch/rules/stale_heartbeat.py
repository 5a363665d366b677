"""stale_heartbeat: trip when a feed or a strategy goes quiet.

- ``source: {venue: NAME}``: the venue's private stream. Stale when the engine's book has
  seen nothing from it (``BookView.last_seen_s``) for ``timeout``, or when it has been
  disconnected for ``timeout`` (a reconnect loop that keeps failing must not look alive).
- ``source: {strategy: NAME}``: ``HeartbeatReceived(source=NAME)`` events (control socket,
  CLI, or ``file: PATH`` whose mtime the daemon watches; see ``Config.heartbeat_files``).
- A source never seen is stale once ``grace`` (default: ``timeout``) has passed since the
  rule's creation, which is the ``now_s`` of its first ``on_tick``/``on_event`` call: the
  rule is pure and reads no clock itself.
- Exactly ``timeout`` without a sign of life is stale (>=). Judged on ticks.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from killswitch.model import Breach, HeartbeatReceived, VenueConnected, VenueDisconnected
from killswitch.rules.base import BookView, RuleBase, RuleStatus
from killswitch.schema.reader import MapReader, item_str
from killswitch.schema.rule import RuleConfig
from killswitch.schema.suggest import did_you_mean
from killswitch.units import format_duration


@dataclass(frozen=True, kw_only=True)
class StaleHeartbeatConfig(RuleConfig):
    source_kind: str  # venue | strategy
    source_name: str
    timeout_s: float
    grace_s: float
    heartbeat_file: Path | None = None  # strategy only

    def describe(self) -> str:
        src = f"{self.source_kind} {self.source_name}"
        if self.heartbeat_file is not None:
            src += f" (file {self.heartbeat_file})"
        return (f"{src} silent for >= {format_duration(self.timeout_s)} "
                f"(never seen: after {format_duration(self.grace_s)} grace)")

    def cross_check(self, ctx: Any, r: MapReader, venues: dict, covered: list) -> None:
        if self.source_kind == "venue" and self.source_name not in venues:
            known = ", ".join(sorted(venues)) or "none"
            r.error("source", f"unknown venue {self.source_name!r}{did_you_mean(self.source_name, venues)}; "
                              f"configured venues: {known}")


def parse_config(r: MapReader, common: dict) -> StaleHeartbeatConfig | None:
    src = r.sub("source", required=True)
    kind, name, hb_file = None, None, None
    if src is not None:
        if src.has("venue") == src.has("strategy"):
            src.ctx.error(src.node.mark, src.path, "source takes exactly one of venue or strategy")
            for key in src.node.entries:
                src.raw(key)
        elif src.has("venue"):
            kind, name = "venue", src.convert("venue", None, item_str)
        else:
            kind, name = "strategy", src.convert("strategy", None, item_str)
            hb_file = src.file_path("file", None)
        src.finish()
    timeout_s = r.duration("timeout", required=True)
    grace_s = r.duration("grace", timeout_s)
    if kind is None:
        return None
    return StaleHeartbeatConfig(**common, source_kind=kind, source_name=name, timeout_s=timeout_s,
                                grace_s=grace_s, heartbeat_file=hb_file)


class StaleHeartbeatRule(RuleBase):
    needs_tick = True

    def __init__(self, config: StaleHeartbeatConfig) -> None:
        super().__init__(config)
        if config.source_kind == "venue":
            self.watches = frozenset({VenueDisconnected, VenueConnected})
        else:
            self.watches = frozenset({HeartbeatReceived})
        self._created_s: float | None = None
        self._last_s: float | None = None  # strategy heartbeats
        self._disconnected_since_s: float | None = None

    def on_event(self, event: object, book: BookView, now_s: float) -> Breach | None:
        if self._created_s is None:
            self._created_s = now_s
        cfg = self.config
        if isinstance(event, HeartbeatReceived) and event.source == cfg.source_name:
            self._last_s = now_s
        elif isinstance(event, VenueDisconnected) and event.venue == cfg.source_name:
            if self._disconnected_since_s is None:
                self._disconnected_since_s = event.ts_recv_s or now_s
        elif isinstance(event, VenueConnected) and event.venue == cfg.source_name:
            self._disconnected_since_s = None
        return None

    def on_tick(self, book: BookView, now_s: float) -> Breach | None:
        stale, observed = self._judge(book, now_s)
        if not stale:
            return None
        cfg = self.config
        return cfg.breach(observed, f"{format_duration(cfg.timeout_s)}",
                          detail=f"{cfg.source_kind} {cfg.source_name}")

    def _judge(self, book: BookView, now_s: float) -> tuple[bool, str]:
        cfg = self.config
        if self._created_s is None:
            self._created_s = now_s
        if cfg.source_kind == "venue":
            last = book.last_seen_s(cfg.source_name)
            if book.is_connected(cfg.source_name):
                self._disconnected_since_s = None
            elif self._disconnected_since_s is None and last is not None:
                # Never-seen venues are judged by the grace period instead.
                self._disconnected_since_s = now_s
        else:
            last = self._last_s
        if last is None:
            waited = now_s - self._created_s
            if waited >= cfg.grace_s:
                return True, f"never seen in {_secs(waited)} (grace {format_duration(cfg.grace_s)})"
            return False, f"not seen yet ({_secs(cfg.grace_s - waited)} of grace left)"
        age = now_s - last
        if age >= cfg.timeout_s:
            return True, f"silent for {_secs(age)}"
        if self._disconnected_since_s is not None and cfg.source_kind == "venue":
            down = now_s - self._disconnected_since_s
            if down >= cfg.timeout_s:
                return True, f"disconnected for {_secs(down)}"
        return False, f"last seen {_secs(age)} ago"

    def _age(self, book: BookView, now_s: float) -> float | None:
        last = book.last_seen_s(self.config.source_name) if self.config.source_kind == "venue" else self._last_s
        return None if last is None else now_s - last

    def status(self, book: BookView, now_s: float) -> RuleStatus:
        stale, observed = self._judge(book, now_s)
        age = self._age(book, now_s)
        return RuleStatus(self.name, self.kind, observed, format_duration(self.config.timeout_s),
                          None if age is None else Decimal(str(round(age, 3))),
                          Decimal(str(self.config.timeout_s)), stale)


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s"
