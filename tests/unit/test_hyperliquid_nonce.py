"""The per-signer nonce source: strictly increasing, and a restart (or a clock stepped back)
never reuses or undercuts a nonce the previous process may have sent."""

from killswitch.venues.hyperliquid.nonce import LEASE_MS, NonceSource, nonce_path


def test_monotonic_within_a_millisecond_and_across_a_clock_step_back():
    src = NonceSource(None)
    a, b = src.next(1000), src.next(1000)
    c = src.next(500)  # wall clock stepped back
    assert a == 1000 and b == 1001 and c == 1002


def test_restart_starts_above_every_nonce_the_previous_process_handed_out(tmp_path):
    path = nonce_path(tmp_path, "0xABC")
    first = NonceSource(path)
    sent = [first.next(1_000_000 + i) for i in range(50)]
    assert path.read_text().strip() == str(1_000_000 + LEASE_MS)  # one write per lease, not per nonce
    # the restarted process's wall clock is behind (NTP step): still above everything sent
    again = NonceSource(path)
    assert again.next(999_000) > max(sent)


def test_the_lease_moves_only_when_it_is_used_up(tmp_path):
    path = nonce_path(tmp_path, "0xabc")
    src = NonceSource(path, lease_ms=100)
    src.next(1000)
    assert int(path.read_text()) == 1100
    src.next(1050)
    assert int(path.read_text()) == 1100
    src.next(1101)
    assert int(path.read_text()) == 1201
