"""NonceSource: full 20-bit randomness, unique pairs, recv_time window, fresh per call."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from killswitch.venues.vertex.nonce import MAX_RECV_AHEAD_MS, RAND_MASK, NonceSource, split_nonce


@given(offset_ms=st.integers(min_value=1, max_value=MAX_RECV_AHEAD_MS),
       now_ms=st.integers(min_value=1_600_000_000_000, max_value=2_000_000_000_000))
def test_recv_time_inside_venue_window(offset_ms, now_ms):
    n = NonceSource(recv_offset_ms=offset_ms).next(now_ms)
    assert now_ms < n.recv_time_ms <= now_ms + MAX_RECV_AHEAD_MS
    assert split_nonce(n.value) == (n.recv_time_ms, n.rand)
    assert n.value < 1 << 64


@pytest.mark.parametrize("offset_ms", [0, -1, MAX_RECV_AHEAD_MS + 1])
def test_offset_outside_window_rejected(offset_ms):
    with pytest.raises(ValueError):
        NonceSource(recv_offset_ms=offset_ms)


def test_uses_all_20_bits():
    src = NonceSource(recv_offset_ms=30_000)
    rands = [src.next(1_700_000_000_000 + i).rand for i in range(4000)]
    assert max(rands) > RAND_MASK * 0.99  # values above the SDKs' 0..999 appear
    seen_bits = 0
    for r in rands:
        seen_bits |= r
    assert seen_bits == RAND_MASK


def test_pairs_never_repeat_even_with_a_colliding_rng():
    rng = random.Random(1)
    seq = iter([5, 5, 5, 7, 7, 9] + [rng.getrandbits(20) for _ in range(1000)])
    src = NonceSource(recv_offset_ms=1000, randbits=lambda bits: next(seq))
    got = [src.next(1_700_000_000_000) for _ in range(3)]  # same millisecond
    assert [n.rand for n in got] == [5, 7, 9]
    assert len({n.value for n in got}) == 3


def test_fresh_per_call_follows_the_clock():
    src = NonceSource(recv_offset_ms=90_000)
    a = src.next(1_700_000_000_000)
    b = src.next(1_700_000_000_250)
    assert b.recv_time_ms - a.recv_time_ms == 250
    assert a.value != b.value


def test_many_in_one_millisecond_are_unique():
    src = NonceSource(recv_offset_ms=5)
    values = {src.next(42).value for _ in range(20_000)}
    assert len(values) == 20_000


def test_pooled_randbits_range_spread_and_refill():
    from killswitch.venues.vertex.nonce import PooledRandbits

    r = PooledRandbits()
    vals = [r(20) for _ in range(3000)]  # > one 4 KiB pool (1024 draws): refills
    assert all(0 <= v < 1 << 20 for v in vals)
    assert len(set(vals)) > 2900  # 20-bit values: a handful of birthday collisions at most
    assert max(vals) > (1 << 19) and min(vals) < (1 << 19)  # uses the high bits too
    with pytest.raises(ValueError):
        r(33)


def test_pooled_randbits_forked_child_draws_fresh_bytes():
    import os

    from killswitch.venues.vertex.nonce import PooledRandbits

    r = PooledRandbits()
    r(20)  # pool filled in the parent
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the next draws must not be the parent's next draws
        os.close(rfd)
        os.write(wfd, b",".join(str(r(32)).encode() for _ in range(8)))
        os._exit(0)
    os.close(wfd)
    child = os.read(rfd, 4096).decode()
    os.close(rfd)
    os.waitpid(pid, 0)
    parent = ",".join(str(r(32)) for _ in range(8))
    assert child != parent
