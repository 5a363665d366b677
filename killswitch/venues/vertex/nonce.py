"""Order/cancel nonces: ``(recv_time_ms << 20) | rand20``, fresh for every attempt.

Pure: the caller passes the wall time of *this* attempt. The SDKs draw ``rand`` from 0..999
and have collided in the same millisecond; we use all 20 bits and additionally remember the
pairs handed out per recv_time, so a pair never repeats within the process.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

RAND_BITS = 20
RAND_MASK = (1 << RAND_BITS) - 1
MAX_RECV_AHEAD_MS = 100_000  # venue accepts now < recv_time <= now + 100 s
_TRIGGER_BIT = 1 << 63


@dataclass(frozen=True, slots=True)
class Nonce:
    value: int
    recv_time_ms: int
    rand: int


def split_nonce(nonce: int) -> tuple[int, int]:
    """(recv_time_ms, rand); bit 63 (Vertex trigger orders) is not part of recv_time."""
    return (nonce & ~_TRIGGER_BIT) >> RAND_BITS, nonce & RAND_MASK


_FORK_GENERATION = [0]  # bumped in a forked child: pools drawn before the fork are discarded
os.register_at_fork(after_in_child=lambda: _FORK_GENERATION.__setitem__(0, _FORK_GENERATION[0] + 1))


class PooledRandbits:
    """``randbits(k)`` (k <= 32) from the OS CSPRNG, drawn 4 KiB at a time.

    Same source as ``secrets.randbits`` (os.urandom), without a getrandom() system call on
    every nonce: a trip's first cancel does not wait for the kernel's entropy pool.
    """

    __slots__ = ("_buf", "_pos", "_gen")

    POOL_BYTES = 4096

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._gen = -1

    def __call__(self, k: int) -> int:
        if not 0 < k <= 32:
            raise ValueError("1..32 bits")
        pos = self._pos
        if pos + 4 > len(self._buf) or self._gen != _FORK_GENERATION[0]:
            self._buf = os.urandom(self.POOL_BYTES)
            self._gen = _FORK_GENERATION[0]
            pos = 0
        self._pos = pos + 4
        return int.from_bytes(self._buf[pos:pos + 4], "big") >> (32 - k)


class NonceSource:
    """Hands out unique nonces ``recv_offset_ms`` ahead of the attempt's wall time."""

    __slots__ = ("_offset_ms", "_randbits", "_used", "_max_tracked_ms")

    def __init__(
        self,
        *,
        recv_offset_ms: int,
        randbits: Callable[[int], int] | None = None,
        max_tracked_ms: int = 4096,
    ) -> None:
        if not 0 < recv_offset_ms <= MAX_RECV_AHEAD_MS:
            raise ValueError(f"recv offset must be in (0, {MAX_RECV_AHEAD_MS}] ms, got {recv_offset_ms}")
        self._offset_ms = int(recv_offset_ms)
        self._randbits = randbits if randbits is not None else PooledRandbits()
        # recv_time_ms -> rands used; bounded: old recv_times can only recur if the wall clock
        # jumps back by more than max_tracked_ms worth of distinct milliseconds.
        self._used: OrderedDict[int, set[int]] = OrderedDict()
        self._max_tracked_ms = max_tracked_ms

    @property
    def recv_offset_ms(self) -> int:
        return self._offset_ms

    def next(self, now_wall_ms: int) -> Nonce:
        recv_time_ms = now_wall_ms + self._offset_ms
        used = self._used.get(recv_time_ms)
        if used is None:
            used = self._used[recv_time_ms] = set()
            while len(self._used) > self._max_tracked_ms:
                self._used.popitem(last=False)
        if len(used) > RAND_MASK:  # 2^20 nonces in one millisecond: impossible in practice
            raise RuntimeError("nonce space for this millisecond exhausted")
        while True:
            rand = self._randbits(RAND_BITS) & RAND_MASK
            if rand not in used:
                break
        used.add(rand)
        return Nonce((recv_time_ms << RAND_BITS) | rand, recv_time_ms, rand)
