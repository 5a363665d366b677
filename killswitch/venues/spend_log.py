"""Recent rate-budget spend, kept in a small file in the state dir across restarts.

A venue counts the weight of every request over its own window whatever happens to our
process: after a crash (kill -9, OOM) and restart, the restarted daemon must not believe
the window is empty, or its first cancels of the restart draw a rate-limit refusal. Each
charge is appended to an in-memory list of (wall ms, weight) within the longest window and
the file is rewritten (tmp + rename, no fsync: it must survive a process crash, which the
page cache does; after a power loss the venue's window has long passed).

A file that exists but cannot be read means "spent, amount unknown": the caller assumes
the worst for one window.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LoadedSpend:
    spent: tuple[tuple[float, int], ...]  # (age_s, weight), oldest first
    blocked_for_s: float  # a refusal's block still running at load time
    unreadable: bool = False


class SpendLog:
    def __init__(self, path: Path, *, horizon_s: float) -> None:
        self.path = path
        self.horizon_ms = int(horizon_s * 1000)
        self._entries: list[tuple[int, int]] = []
        self._blocked_until_ms = 0
        self.write_errors = 0

    def load(self, now_wall_ms: int) -> LoadedSpend:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LoadedSpend((), 0.0)
        except OSError:
            return LoadedSpend((), 0.0, unreadable=True)
        try:
            obj = json.loads(raw)
            entries = [(int(t), int(w)) for t, w in obj.get("spent", [])]
            blocked_until = int(obj.get("blocked_until_ms", 0))
        except (ValueError, TypeError, AttributeError):
            return LoadedSpend((), 0.0, unreadable=True)
        # A wall clock stepped back since the crash makes entries look future: count them now.
        entries = sorted((min(t, now_wall_ms), w) for t, w in entries if t > now_wall_ms - self.horizon_ms and w > 0)
        self._entries = entries
        self._blocked_until_ms = blocked_until
        return LoadedSpend(tuple(((now_wall_ms - t) / 1000.0, w) for t, w in entries),
                           max(0.0, (blocked_until - now_wall_ms) / 1000.0))

    def record(self, wall_ms: int, weight: int) -> None:
        self._entries.append((wall_ms, weight))
        self._flush(wall_ms)

    def record_block(self, wall_ms: int, block_s: float) -> None:
        self._blocked_until_ms = max(self._blocked_until_ms, wall_ms + int(block_s * 1000))
        self._flush(wall_ms)

    def _flush(self, now_wall_ms: int) -> None:
        horizon = now_wall_ms - self.horizon_ms
        self._entries = [(t, w) for t, w in self._entries if t > horizon]
        data = json.dumps({"spent": self._entries, "blocked_until_ms": self._blocked_until_ms},
                          separators=(",", ":")).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            self.write_errors += 1  # the budget still works in memory; a restart assumes the worst
