"""Alarm bookkeeping: one alarm per condition while it lasts. Pure (times passed in).

An alarm is keyed by its condition (``unverified:nado``), never by its message: the message
may carry a changing count ("3 failures", "7 rounds") and is simply updated. Each alarm
keeps how often it was raised and when it was first and last seen, and is logged when it
starts and then again at most every ``relog_s`` while it lasts, not once per occurrence
(the engine raises some alarms on every tick or retry, several times a second).

Reads as a ``{key: message}`` mapping, so status and metrics code can treat it as a dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

RELOG_S = 60.0


@dataclass(slots=True)
class Alarm:
    key: str
    message: str
    count: int
    first_seen_s: float
    last_seen_s: float
    first_seen_wall_ms: int
    last_seen_wall_ms: int
    last_logged_s: float

    def to_dict(self, now_s: float) -> dict:
        return {"message": self.message, "count": self.count,
                "first_seen_wall_ms": self.first_seen_wall_ms, "last_seen_wall_ms": self.last_seen_wall_ms,
                "active_for_s": round(now_s - self.first_seen_s, 3)}


class AlarmBook(Mapping[str, str]):
    def __init__(self, *, relog_s: float = RELOG_S) -> None:
        self._alarms: dict[str, Alarm] = {}
        self.relog_s = relog_s
        self.raised_total = 0  # distinct alarm starts since the process started

    # -- Mapping[str, str]: key -> current message ------------------------------------
    def __getitem__(self, key: str) -> str:
        return self._alarms[key].message

    def __iter__(self) -> Iterator[str]:
        return iter(self._alarms)

    def __len__(self) -> int:
        return len(self._alarms)

    def __delitem__(self, key: str) -> None:
        del self._alarms[key]

    def pop(self, key: str, default: str | None = None) -> str | None:
        a = self._alarms.pop(key, None)
        return default if a is None else a.message

    # -- raising ------------------------------------------------------------------------
    def raise_(self, key: str, message: str, *, now_s: float, wall_ms: int) -> str | None:
        """Record one occurrence. Returns "new", "relog" (log it again now) or None (quiet)."""
        a = self._alarms.get(key)
        if a is None:
            self._alarms[key] = Alarm(key, message, 1, now_s, now_s, wall_ms, wall_ms, now_s)
            self.raised_total += 1
            return "new"
        a.count += 1
        a.message = message
        a.last_seen_s = now_s
        a.last_seen_wall_ms = wall_ms
        if now_s - a.last_logged_s >= self.relog_s:
            a.last_logged_s = now_s
            return "relog"
        return None

    def get_alarm(self, key: str) -> Alarm | None:
        return self._alarms.get(key)

    def details(self, now_s: float) -> dict[str, dict]:
        return {k: a.to_dict(now_s) for k, a in self._alarms.items()}
