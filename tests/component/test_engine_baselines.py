"""Baselines survive reset, reload and restart; scopes follow the config; a stalled stream is caught."""

from decimal import Decimal as D

import trio

from killswitch.config import build_rules, load_config_text
from killswitch.engine.loop import ApplyRules
from killswitch.engine.rule_state import RuleStateStore
from killswitch.model import (
    EVERYTHING, EquityObserved, OpenOrdersSnapshot, OrderInfo, OrderOpened, ResetCommand, TripCommand, VenueAlive,
)
from tests.unit.test_rules_helpers import VENUES_YAML

from .fakes import FakeSession
from .harness import running

DD = """
rules:
  - name: dd
    kind: drawdown
    venues: [ox]
    max_drawdown: 5%
{extra}"""


def rules_of(extra: str = "", more: str = ""):
    cfg = load_config_text(VENUES_YAML + DD.format(extra=extra) + more)
    return build_rules(cfg)


def events(recs, name):
    return [r for r in recs if r["event"] == name]


async def equity(h, value):
    n = h.engine.counters.events
    await h.send.send(EquityObserved("ox", D(value)))
    await h.until(lambda: h.engine.counters.events > n)


async def test_reset_keeps_the_drawdown_peak_so_a_loss_right_after_it_trips(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        async with running(tmp_path, [ox], rules_of(), rule_factory=rules_of) as h:
            await equity(h, 1000)
            await h.send.send(TripCommand(reason="manual"))
            await h.until(lambda: h.engine.latch.tripped)
            await h.send.send(ResetCommand(operator="op", reason="r"))
            await h.until(lambda: not h.engine.latch.tripped)
            await equity(h, 950)  # 5% below the peak from before the reset
            await h.until(lambda: h.engine.latch.tripped)
            assert h.engine.latch.trips[-1].rule == "dd"


async def test_reset_with_rebase_restarts_the_peak_at_the_current_equity_and_audits_both(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        async with running(tmp_path, [ox], rules_of(), rule_factory=rules_of) as h:
            await equity(h, 1000)
            await equity(h, 940)
            await h.until(lambda: h.engine.latch.tripped)
            await h.send.send(ResetCommand(operator="op", reason="accept the loss", rebase=True))
            await h.until(lambda: not h.engine.latch.tripped)
            await equity(h, 900)  # 4.3% below the new peak of 940
            assert not h.engine.latch.tripped
            await equity(h, 893)  # 5% below 940
            await h.until(lambda: h.engine.latch.tripped)
            recs = await h.audit_records()
        rb = events(recs, "rule_state_rebased")
        assert rb and rb[0]["old_peaks"] == {"ox": "1000"} and rb[0]["new_peaks"] == {"ox": "940"}
        assert events(recs, "reset")[0]["rebase"] is True


async def test_reload_of_a_threshold_keeps_the_peak_but_a_peak_mode_change_rebases(tmp_path, autojump_clock):
    with trio.fail_after(30):
        ox = FakeSession("ox")
        async with running(tmp_path, [ox], rules_of()) as h:
            await equity(h, 1000)
            await equity(h, 960)
            six = build_rules(load_config_text(VENUES_YAML + DD.format(extra="").replace("5%", "6%")))
            await h.send.send(ApplyRules(tuple(six)))
            await equity(h, 945)  # 5.5%: below the new 6%
            assert not h.engine.latch.tripped
            assert h.engine.rules[0].peaks() == {"ox": "1000"}
            await h.send.send(ApplyRules(tuple(rules_of("    peak: {rolling: 1h}\n"))))
            await equity(h, 944)
            assert h.engine.rules[0].peaks() == {"ox": "945"}  # rebased at the current equity, then 944
            recs = await h.audit_records()
        rb = events(recs, "rule_state_rebased")
        assert len(rb) == 1 and rb[0]["source"] == "reload" and "peak" in rb[0]["reason"]
        assert rb[0]["old_peaks"] == {"ox": "1000"}


async def test_restart_restores_the_peak_from_state_dir(tmp_path, autojump_clock):
    with trio.fail_after(30):
        store = RuleStateStore(tmp_path / "state")
        async with running(tmp_path, [FakeSession("ox")], rules_of(), rule_store=store) as h:
            await equity(h, 1000)
            await equity(h, 980)
            await trio.sleep(0.2)  # a tick writes the changed baseline
            h.engine.save_rule_state(force=True)
        async with running(tmp_path, [FakeSession("ox")], rules_of(), rule_store=store) as h:
            await equity(h, 951)
            assert not h.engine.latch.tripped
            await equity(h, 950)  # 5% below the peak of the previous process
            await h.until(lambda: h.engine.latch.tripped)
            recs = await h.audit_records()
        assert events(recs, "rule_state_restored")[0]["peaks"] == {"ox": "1000"}


async def test_corrupt_rule_state_alarms_and_starts_from_current_equity(tmp_path, autojump_clock):
    with trio.fail_after(30):
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "rule_state.json").write_bytes(b"{garbage")
        store = RuleStateStore(tmp_path / "state")
        async with running(tmp_path, [FakeSession("ox")], rules_of(), rule_store=store) as h:
            await equity(h, 1000)
            assert "rule_state" in h.engine.alarms
            await equity(h, 950)
            await h.until(lambda: h.engine.latch.tripped)


async def test_manual_scope_follows_reload_and_reset(tmp_path, autojump_clock):
    manual_eth = "  - {name: m, kind: manual, action: {cancel_products: [ETH]}}\n"
    with trio.fail_after(30):
        ox = FakeSession("ox")
        async with running(tmp_path, [ox], rules_of(more=manual_eth), rule_factory=rules_of) as h:
            assert h.engine.manual_scope.products == frozenset({"ETH"})
            await h.send.send(ApplyRules(tuple(rules_of())))  # manual rule gone: cancel_all
            await h.until(lambda: h.engine.manual_scope == EVERYTHING)
            await h.send.send(TripCommand(reason="manual"))
            await h.until(lambda: h.engine.latch.tripped)
            assert h.engine.latch.trips[-1].scope == EVERYTHING


async def test_poll_events_do_not_make_a_silent_stream_look_alive(tmp_path, autojump_clock):
    with trio.fail_after(30):
        async with running(tmp_path, [FakeSession("ox")], []) as h:
            await h.send.send(VenueAlive("ox"))
            await h.until(lambda: h.engine.state.last_seen_s("ox") is not None)
            seen = h.engine.state.last_seen_s("ox")
            await trio.sleep(5)
            await h.send.send(EquityObserved("ox", D(1)))
            await h.send.send(OpenOrdersSnapshot("ox", (), None, "poll"))
            await trio.sleep(0.1)
            assert h.engine.state.last_seen_s("ox") == seen


async def test_drift_poll_with_orders_the_stream_never_reported_alarms_reconnects_and_trips_the_rule(
        tmp_path, autojump_clock):
    rule = "  - {name: drift, kind: stream_drift, venues: [ox]}\n"
    with trio.fail_after(30):
        asked: list[tuple[str, str]] = []
        async with running(tmp_path, [FakeSession("ox")], rules_of(more=rule)[1:],
                           reconnect=lambda v, why: asked.append((v, why))) as h:
            orders = tuple(OrderInfo("ox", "BTC", f"o{i}") for i in range(50))  # no timestamps
            await h.send.send(OpenOrdersSnapshot("ox", orders, None, "poll"))
            await h.until(lambda: h.engine.state.open_count("ox") == 50)  # count rules see them at once
            assert not asked  # one poll may race the pushes
            await h.send.send(OpenOrdersSnapshot("ox", orders, None, "poll"))
            await h.until(lambda: h.engine.latch.tripped)
            assert asked == [("ox", "stream drift")]
            assert "stream_drift:ox" in h.engine.alarms and h.engine.counters.stream_drift == 1
            assert h.engine.latch.trips[-1].rule == "drift"


async def test_orders_on_products_the_stream_does_not_cover_are_not_stream_drift(tmp_path, autojump_clock):
    with trio.fail_after(30):
        asked: list = []
        async with running(tmp_path, [FakeSession("ox")], [], reconnect=lambda v, why: asked.append(v)) as h:
            orders = tuple(OrderInfo("ox", "3", f"o{i}") for i in range(5))
            for _ in range(3):
                await h.send.send(OpenOrdersSnapshot("ox", orders, None, "poll", stream_products=frozenset({"2"})))
            await h.until(lambda: h.engine.state.open_count("ox") == 5)  # still reach the book
            await trio.sleep(0.1)
            assert h.engine.counters.stream_drift == 0 and not asked


async def test_a_failing_baseline_write_alarms_and_clears_once_writes_work_again(tmp_path, autojump_clock):
    class FlakyStore(RuleStateStore):
        fail = True

        def _write(self, data, durable):
            if self.fail:
                raise OSError("disk full")
            super()._write(data, durable)

    with trio.fail_after(30):
        store = FlakyStore(tmp_path / "state")
        async with running(tmp_path, [FakeSession("ox")], rules_of(), rule_store=store) as h:
            await equity(h, 1000)
            await h.until(lambda: "rule_state_persist" in h.engine.alarms)
            assert not h.engine.latch.tripped  # an alarm, never a crash or a silent loss
            store.fail = False
            await equity(h, 1001)
            await h.until(lambda: "rule_state_persist" not in h.engine.alarms)
        assert '"peak":"1001"' in (tmp_path / "state" / "rule_state.json").read_text()


async def test_missing_rule_state_alarms_until_a_baseline_is_written(tmp_path, autojump_clock):
    with trio.fail_after(30):
        store = RuleStateStore(tmp_path / "state")
        async with running(tmp_path, [FakeSession("ox")], rules_of(), rule_store=store) as h:
            assert "rule_state_missing" in h.engine.alarms
            await equity(h, 1000)
            await h.until(lambda: "rule_state_missing" not in h.engine.alarms)
            recs = await h.audit_records()
        assert any(r["event"] == "alarm" and r["key"] == "rule_state_missing" for r in recs)


async def test_a_push_that_overtakes_a_stale_poll_keeps_its_order_in_the_book(tmp_path, autojump_clock):
    with trio.fail_after(30):
        async with running(tmp_path, [FakeSession("ox")], []) as h:
            await h.send.send(OrderOpened(OrderInfo("ox", "BTC", "fresh")))
            await h.until(lambda: h.engine.state.open_count("ox") == 1)
            await h.send.send(OpenOrdersSnapshot("ox", (), None, "poll"))  # computed before the order existed
            await trio.sleep(0.1)
            assert h.engine.state.open_count("ox") == 1
            await trio.sleep(3)
            await h.send.send(OpenOrdersSnapshot("ox", (), None, "poll"))  # a later poll: really gone
            await h.until(lambda: h.engine.state.open_count("ox") == 0)
            assert h.engine.counters.stream_drift == 0
