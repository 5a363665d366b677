"""Rule baselines on disk: exact round trip, checksummed, bounded, keyed by what defines them."""

from decimal import Decimal as D

import pytest

from killswitch.engine import rule_state
from killswitch.engine.rule_state import MAX_BYTES, RuleStateError, RuleStateStore, describe_rebases
from killswitch.model import CashFlowObserved, EquityObserved
from killswitch.rules.drawdown import MAX_PERSISTED_WINDOW, _coalesce
from tests.unit.test_rules_helpers import FakeBook, load_rules


def dd(extra: str = "", threshold: str = "5%"):
    _, rules = load_rules(f"""
rules:
  - name: dd
    kind: drawdown
    venues: [ox]
    max_drawdown: {threshold}
{extra}""")
    return rules[0]


def test_peak_and_flows_survive_a_round_trip_through_the_file(tmp_path):
    book, store = FakeBook(), RuleStateStore(tmp_path)
    a = dd()
    a.on_event(EquityObserved("ox", D(1000)), book, 0.0)
    a.on_event(CashFlowObserved("ox", D(-100)), book, 1.0)
    a.on_event(EquityObserved("ox", D(880)), book, 2.0)  # 2.2% below the flow-adjusted peak of 900
    store.save(rule_state.collect([a], 0.0), 1)
    b = dd()
    restore, rebases = rule_state.plan_restore([b], store.load())
    assert rebases == [] and restore[0][0] is b
    b.import_baseline(restore[0][1], 0.0)
    assert b.peaks() == {"ox": "900"}
    assert b.on_event(EquityObserved("ox", D("855.01")), book, 3.0) is None  # 4.999%
    assert b.on_event(EquityObserved("ox", D(855)), book, 4.0) is not None  # exactly 5% of the true peak 900

def test_rolling_window_times_survive_a_new_monotonic_origin(tmp_path):
    book = FakeBook()
    a = dd("    peak: {rolling: 100s}\n")
    a.on_event(EquityObserved("ox", D(1000)), book, 50.0)
    a.on_event(EquityObserved("ox", D(990)), book, 60.0)
    data = a.export_baseline(1_000_000.0)  # wall = mono + 1e6
    b = dd("    peak: {rolling: 100s}\n")
    b.import_baseline(data, 999_000.0)  # new process: wall = mono + 999000, so t=50 is now mono 1050
    assert b.on_event(EquityObserved("ox", D(949)), book, 1100.0) is not None  # the 1000 peak still in window
    c = dd("    peak: {rolling: 100s}\n")
    c.import_baseline(data, 999_000.0)
    assert c.on_event(EquityObserved("ox", D(949)), book, 1151.0) is None  # 1000 slid out; 990 too at 1160


def test_a_threshold_change_keeps_the_baseline_but_a_peak_mode_change_rebases():
    book = FakeBook()
    a = dd()
    a.on_event(EquityObserved("ox", D(1000)), book, 0.0)
    stored = rule_state.collect([a], 0.0)
    restore, rebases = rule_state.plan_restore([dd(threshold="10%")], stored)
    assert len(restore) == 1 and not rebases
    restore, rebases = rule_state.plan_restore([dd("    peak: {rolling: 1h}\n")], stored)
    assert not restore and rebases[0].rule == "dd" and "peak" in rebases[0].reason
    assert rebases[0].old_baseline["series"]["ox"]["peak"] == "1000"


def test_torn_or_edited_file_is_refused_by_its_checksum(tmp_path):
    store = RuleStateStore(tmp_path)
    store.save({"dd": {"key": {}, "baseline": {"series": {}}}}, 1)
    data = store.path.read_bytes()
    store.path.write_bytes(data.replace(b'"dd"', b'"dx"'))
    with pytest.raises(RuleStateError, match="checksum"):
        store.load()
    store.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuleStateError):
        store.load()


def test_missing_file_is_empty_and_an_oversized_one_is_refused(tmp_path):
    store = RuleStateStore(tmp_path)
    assert store.load() == {}
    store.path.write_bytes(b"x" * (MAX_BYTES + 10))
    with pytest.raises(RuleStateError, match="cap"):
        store.load()


def test_malformed_baseline_raises_value_error_never_crashes_later():
    with pytest.raises(ValueError):
        dd().import_baseline({"series": {"ox": {"flows": 5}}}, 0.0)
    with pytest.raises(ValueError):
        dd().import_baseline({"series": {"ox": {"flows": "0", "window": [["x", "1"]]}}}, 0.0)


def test_window_coalescing_never_lowers_a_future_peak():
    window = [(float(t), D(10_000 - t)) for t in range(5000)]  # a slow decline: every entry kept
    small = _coalesce(window, MAX_PERSISTED_WINDOW)
    assert len(small) <= MAX_PERSISTED_WINDOW
    for t in range(0, 5000, 37):
        true_peak = max((v for ts, v in window if ts >= t), default=None)
        kept = max((v for ts, v in small if ts >= t), default=None)
        assert kept >= true_peak


def test_check_names_the_rules_that_will_rebase(tmp_path):
    book = FakeBook()
    a = dd()
    a.on_event(EquityObserved("ox", D(1000)), book, 0.0)
    RuleStateStore(tmp_path).save(rule_state.collect([a], 0.0), 1)
    assert describe_rebases([dd(threshold="7%")], tmp_path) == []
    lines = describe_rebases([dd("    peak: {rolling: 1h}\n")], tmp_path)
    assert len(lines) == 1 and "dd" in lines[0] and "rebase" in lines[0]


def test_killswitch_check_on_a_changed_config_says_which_rules_will_rebase(tmp_path, capsys):
    from killswitch.cli import main
    from tests.unit.test_rules_helpers import VENUES_YAML

    def write(peak: str) -> str:
        path = tmp_path / "ks.yaml"
        path.write_text(f"daemon:\n  state_dir: {tmp_path / 'state'}\n" + VENUES_YAML +
                        f"rules:\n  - {{name: dd, kind: drawdown, venues: [ox], max_drawdown: 5%, peak: {peak}}}\n")
        return str(path)

    a = dd()
    a.on_event(EquityObserved("ox", D(1000)), FakeBook(), 0.0)
    RuleStateStore(tmp_path / "state").save(rule_state.collect([a], 0.0), 1)
    assert main(["check", write("since_start"), "--no-secrets"]) == 0
    assert "will rebase" not in capsys.readouterr().out
    assert main(["check", write("{rolling: 1h}"), "--no-secrets"]) == 0
    out = capsys.readouterr().out
    assert "note: rule dd: baseline will rebase" in out and "peak" in out


def test_rule_state_file_is_never_followed_through_a_symlink_nor_read_from_a_fifo(tmp_path):
    """Like the latch and audit files: a FIFO planted at the path must not hang start-up and a
    symlink must not be followed (a write through it would land wherever it points)."""
    import os

    import pytest

    from killswitch.engine.rule_state import FILE_NAME, RuleStateError, RuleStateStore

    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / FILE_NAME)
    with pytest.raises(RuleStateError, match="refusing state file"):
        RuleStateStore(state).load()  # before: open() blocked forever on the FIFO
    (state / FILE_NAME).unlink()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (state / (FILE_NAME + ".tmp")).symlink_to(target)
    RuleStateStore(state).save({}, 1)  # the planted link is removed, not written through
    assert target.read_bytes() == b"keep"
    assert not (state / FILE_NAME).is_symlink() and RuleStateStore(state).load() == {}
