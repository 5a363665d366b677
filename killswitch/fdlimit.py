"""File-descriptor headroom: the venues' reconnects must never compete with local clients.

At start ``killswitch run`` raises the soft ``RLIMIT_NOFILE`` to the hard limit (the unit sets
``LimitNOFILE=``), and every local listener is capped (control socket: per-uid and global
slots; metrics/status: :data:`killswitch.net.http.DAEMON_LIMITS`). What the listeners can hold
at most plus what the venues need is checked against the limit, keeping
:data:`RESERVE_FDS` free; a limit too small for that is logged loudly at start.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

RESERVE_FDS = 256  # free for venue reconnects, REST pools, the audit log and the latch files
PER_VENUE_FDS = 8  # websockets + a small REST pool per venue
BASE_FDS = 64  # interpreter, logs, state files, signal wakeup, listeners themselves


@dataclass(frozen=True, slots=True)
class FdBudget:
    soft_before: int
    soft: int
    hard: int
    needed: int

    @property
    def headroom_ok(self) -> bool:
        return self.soft >= self.needed + RESERVE_FDS


def raise_nofile_limit() -> tuple[int, int, int]:
    """Soft limit up to the hard limit (best effort). Returns (soft before, soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return before, soft, hard


def fd_budget(*, venues: int, listener_slots: int) -> FdBudget:
    before, soft, hard = raise_nofile_limit()
    needed = BASE_FDS + listener_slots + venues * PER_VENUE_FDS
    return FdBudget(before, soft, hard, needed)
