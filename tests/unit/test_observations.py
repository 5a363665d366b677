"""The engine's latency histograms: Prometheus bucket semantics (le inclusive, cumulative)."""

from killswitch.observations import Histogram, Observations


def test_histogram_buckets_are_inclusive_and_cumulative():
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.001, 0.002, 0.1, 7.0):
        h.observe(v)
    assert h.cumulative() == [("0.001", 2), ("0.01", 3), ("0.1", 4), ("+Inf", 5)]
    assert h.count == 5 and abs(h.sum_s - 7.1035) < 1e-12


def test_observations_keep_one_histogram_per_venue_and_count_reconnects():
    obs = Observations()
    obs.first_cancel("ox", 0.002)
    obs.first_cancel("nado", 0.004)
    obs.first_cancel("ox", 0.003)
    assert obs.trip_to_first_cancel["ox"].count == 2 and obs.trip_to_first_cancel["nado"].count == 1
    assert obs.reconnects("ox") == 0
    for _ in range(3):
        obs.connected("ox")
    assert obs.reconnects("ox") == 2  # the first connection is not a reconnect
