"""`killswitch check` helps with the common slips: a misspelt key, rule kind, venue kind or venue
name gets "did you mean ...?", an unknown venue lists the configured ones, and a tab in the
indentation says to indent with spaces."""

from __future__ import annotations

import subprocess
import sys

import pytest

from killswitch.config import ConfigError, load_config_text
from killswitch.schema.suggest import did_you_mean
from tests.e2e.helpers import REPO

BASE = """\
daemon: {state_dir: /tmp/ks-hints}
venues:
  - {name: ox-main, kind: oxfun, api_key: {env: A}, api_secret: {env: B}}
  - {name: nado-main, kind: nado, private_key: {env: C}}
rules:
"""


def messages(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config_text(text)
    return [f"{i.line}:{i.column}: {i.key_path}: {i.message}" for i in err.value.issues]


@pytest.mark.parametrize("rule, expected", [
    ("{name: dd, kind: drawdown, max_drawdwn: 5%}", "unknown key 'max_drawdwn' (did you mean 'max_drawdown'?)"),
    ("{name: dd, kind: drawdwn, max_drawdown: 5%}", "unknown rule kind 'drawdwn' (did you mean 'drawdown'?)"),
    ("{name: dd, kind: Drawdown, max_drawdown: 5%}", "(did you mean 'drawdown'?)"),
    ("{name: m, kind: max_open_orders, max: 5, venues: [ox-mian]}",
     "unknown venue 'ox-mian' (did you mean 'ox-main'?); configured venues: nado-main, ox-main"),
    ("{name: hb, kind: stale_heartbeat, source: {venue: nado-mian}, timeout: 5s}",
     "unknown venue 'nado-mian' (did you mean 'nado-main'?); configured venues: nado-main, ox-main"),
])
def test_misspelt_names_get_a_suggestion(rule, expected):
    found = messages(BASE + f"  - {rule}\n")
    assert any(expected in m for m in found), found


def test_unknown_key_in_daemon_and_venue_kind_get_suggestions():
    found = messages("daemon:\n  tick_intervall: 1s\nvenues:\n  - {name: a, kind: okfun}\n")
    assert any("daemon.tick_intervall: unknown key 'tick_intervall' (did you mean 'tick_interval'?)" in m
               for m in found), found
    assert any("must be one of oxfun, vertex, nado, hyperliquid; got 'okfun' (did you mean 'oxfun'?)" in m for m in found), found


def test_no_suggestion_for_a_word_that_resembles_nothing():
    found = messages(BASE + "  - {name: m, kind: max_open_orders, max: 5, venues: [zzzz]}\n")
    assert any("unknown venue 'zzzz'; configured venues: nado-main, ox-main" in m for m in found), found
    assert did_you_mean("zzzz", ["ox-main"]) == ""


def test_a_tab_in_the_indentation_says_indent_with_spaces():
    found = messages("daemon:\n\tstate_dir: /tmp/x\n")
    assert len(found) == 1 and found[0].startswith("2:1: ")
    assert "indent with spaces" in found[0]
    found = messages(BASE + "  - {name: m, kind: max_open_orders, max: 5}\n \t- {name: n, kind: manual}\n")
    assert "indent with spaces" in found[0]
    # Other syntax errors get no tab hint.
    assert "tab" not in messages("daemon: [unclosed\n")[0]


def test_check_prints_the_suggestion(tmp_path):
    cfg = tmp_path / "ks.yaml"
    cfg.write_text(BASE + "  - {name: dd, kind: drawdown, max_drawdwn: 5%}\n")
    out = subprocess.run([sys.executable, "-m", "killswitch", "check", str(cfg)], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 1
    assert f"{cfg}:6:32: rules[0].max_drawdwn: unknown key 'max_drawdwn' (did you mean 'max_drawdown'?)" in out.stderr


def test_a_trip_or_cash_flow_naming_a_misspelt_venue_gets_a_suggestion():
    from killswitch.control.protocol import RequestError, cash_flow_command, trip_command

    known = frozenset({"ox-main", "nado-main"})
    with pytest.raises(RequestError, match=r"unknown venue\(s\): ox-mian \(did you mean 'ox-main'\?\); "
                                           r"configured: nado-main, ox-main"):
        trip_command({"reason": "r", "venues": ["ox-mian"]}, known_venues=known, default_operator="op")
    with pytest.raises(RequestError, match=r"unknown venue 'nado-mian' \(did you mean 'nado-main'\?\)"):
        cash_flow_command({"venue": "nado-mian", "amount": "1"}, known_venues=known, default_operator="op")
