"""Pure cores of issue #13: venue clock offset, refusal blocks, spend log, alarm book, and
planning later rounds from the verification snapshot."""

from __future__ import annotations

from killswitch.engine.alarms import AlarmBook
from killswitch.engine.plan import CANCEL_ALL, CANCEL_ORDERS, CANCEL_PRODUCTS, plan_cancels
from killswitch.model import EVERYTHING, OrderInfo, Side
from killswitch.venues.base import RateBudget
from killswitch.venues.clock_offset import SkewAlarm, VenueClock
from killswitch.venues.spend_log import SpendLog
from killswitch.venues.vertex.session import CAPABILITIES as NADO


def test_venue_clock_uses_lowest_rtt_sample_and_ignores_host_wall_steps():
    c = VenueClock()
    assert c.venue_ms(mono_now_ms=1000, wall_now_ms=5_000) == 5_000  # no sample: host clock
    c.add(mono_send_ms=1000, mono_recv_ms=1400, server_ms=100_500)  # rtt 400, offset 99_300
    c.add(mono_send_ms=2000, mono_recv_ms=2010, server_ms=101_205)  # rtt 10, offset 99_200
    assert c.venue_ms(mono_now_ms=3000, wall_now_ms=0) == 102_200
    # A host wall step moves the reported skew, never venue time.
    assert c.venue_ms(mono_now_ms=3000, wall_now_ms=-75_000) == 102_200
    assert c.skew_ms(mono_now_ms=3000, wall_now_ms=102_200 - 45_000) == 45_000


def test_rate_budget_refusal_blocks_until_the_window_passed():
    b = RateBudget([(10, 100)])
    assert b.available(0.0) == 100
    b.refused(1.0, 10.0)
    assert b.available(5.0) == 0 and b.wait_s(1, 5.0) == 6.0
    assert not b.try_charge(1, 10.9)
    assert b.available(11.0) == 100 and b.wait_s(1, 11.0) == 0


def test_spend_log_survives_a_restart_and_an_unreadable_file_means_spent(tmp_path):
    log = SpendLog(tmp_path / "spend.json", horizon_s=60)
    log.record(1_000_000, 50)
    log.record_block(1_001_000, 10)
    loaded = SpendLog(tmp_path / "spend.json", horizon_s=60).load(1_003_000)
    assert loaded.spent == ((3.0, 50),) and loaded.blocked_for_s == 8.0 and not loaded.unreadable
    assert SpendLog(tmp_path / "spend.json", horizon_s=60).load(1_100_000).spent == ()  # outside the window
    (tmp_path / "spend.json").write_bytes(b"{torn")
    assert SpendLog(tmp_path / "spend.json", horizon_s=60).load(1_003_000).unreadable


def test_alarm_book_one_alarm_per_key_counts_and_relogs_slowly():
    a = AlarmBook(relog_s=60)
    assert a.raise_("unverified:x", "3 failures", now_s=0, wall_ms=1000) == "new"
    for i in range(4, 250):  # ~4 per second for a minute
        assert a.raise_("unverified:x", f"{i} failures", now_s=i / 4.2, wall_ms=1000 + i) is None
    assert a.raise_("unverified:x", "250 failures", now_s=60.0, wall_ms=9000) == "relog"
    assert dict(a) == {"unverified:x": "250 failures"}
    d = a.details(61.0)["unverified:x"]
    assert d["count"] == 248 and d["first_seen_wall_ms"] == 1000 and d["last_seen_wall_ms"] == 9000


def _o(oid: str, product: str, trigger: bool = False) -> OrderInfo:
    return OrderInfo("nado", product, oid, None, Side.BUY, is_trigger=trigger)


def test_later_round_from_snapshot_plans_each_plane_cheapest_complete():
    eng = [_o(f"e{i}", "2") for i in range(3)]
    trig = [_o("t1", "4", True), _o("t2", "4", True)]
    kw = dict(venue="nado", scope=EVERYTHING, caps=NADO, trusted=True, round_no=2, budget_available=None,
              snapshot_complete=True)
    only_trig = plan_cancels(in_scope=trig, all_known=trig, **kw)
    assert [(s.verb, len(s.orders)) for s in only_trig.steps] == [(CANCEL_ORDERS, 2)] and only_trig.total_cost == 0
    mixed = plan_cancels(in_scope=eng + trig, all_known=eng + trig, **kw)
    assert [s.verb for s in mixed.steps] == [CANCEL_ORDERS, CANCEL_ORDERS] and mixed.total_cost == 3
    many = [_o(f"m{i}", "2") for i in range(40)]
    per_product = plan_cancels(in_scope=many, all_known=many, **kw)
    assert [s.verb for s in per_product.steps] == [CANCEL_PRODUCTS] and per_product.total_cost == 5
    assert not per_product.steps[0].include_triggers  # no trigger survivors: no trigger request
    # Without a fresh snapshot a later round still goes wide.
    wide = plan_cancels(in_scope=many, all_known=many, **{**kw, "snapshot_complete": False})
    assert wide.steps[0].verb == CANCEL_ALL


def test_systemd_units_start_after_time_sync():
    from pathlib import Path

    for unit in sorted((Path(__file__).resolve().parents[2] / "systemd").glob("*.service")):
        after = [line for line in unit.read_text().splitlines() if line.startswith("After=")]
        assert any("time-sync.target" in line.split("=", 1)[1].split() for line in after), unit.name


def test_skew_alarm_raises_refreshes_while_over_and_clears_once():
    alarm = SkewAlarm(10.0)
    assert alarm.update(None) is None and alarm.update(9_000) is None  # unknown, then under
    up = alarm.update(-45_000)
    assert up is not None and up.active and "45.0 s ahead of" in up.message and "10000 ms" in up.message
    assert alarm.update(12_000).active  # refreshed while over (the message follows the offset)
    down = alarm.update(3)
    assert down is not None and not down.active and down.message == ""
    assert alarm.update(3) is None  # cleared once
