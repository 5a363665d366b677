"""Control plane pure core: peer decision, request validation, rendering."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest

from killswitch.control import build_cli_request, render_command_reply, render_status
from killswitch.control.protocol import (
    RequestError,
    cash_flow_command,
    encode_reply,
    parse_proc_groups,
    parse_request,
    reset_command,
    trip_command,
)
from killswitch.model import EVERYTHING, CancelScope

OWN = 990
GROUP = 4000


def test_parse_proc_groups():
    text = "Name:\tpython\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 4000 \nNgid:\t0\n"
    assert parse_proc_groups(text) == frozenset({4, 24, 4000})
    assert parse_proc_groups("Groups:\t\n") == frozenset()
    assert parse_proc_groups("Name: x\n") == frozenset()


@pytest.mark.parametrize("line, error", [
    (b"not json", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b'{"op":"explode"}', "unknown op"),
    (b'{"nop":1}', "unknown op"),
])
def test_parse_request_errors(line, error):
    with pytest.raises(RequestError, match=error):
        parse_request(line)


def test_parse_request_ok():
    assert parse_request(b'{"op":"status"}') == {"op": "status"}


VENUES = frozenset({"ox-a", "nado-b"})


def test_trip_command_scope_and_defaults():
    cmd = trip_command({"op": "trip", "reason": "fat finger"}, known_venues=VENUES, default_operator="alice")
    assert cmd.reason == "fat finger" and cmd.operator == "alice" and cmd.source == "control"
    assert cmd.scope == EVERYTHING
    cmd = trip_command({"reason": "r", "operator": "bob", "venues": ["ox-a"], "products": ["BTC-USD-SWAP-LIN"]},
                       known_venues=VENUES, default_operator="x")
    assert cmd.operator == "bob"
    assert cmd.scope == CancelScope(venues=frozenset({"ox-a"}), products=frozenset({"BTC-USD-SWAP-LIN"}))


@pytest.mark.parametrize("req, error", [
    ({}, "'reason' is required"),
    ({"reason": "   "}, "'reason' is required"),
    ({"reason": 5}, "must be a string"),
    ({"reason": "r", "venues": ["ghost"]}, "unknown venue"),
    ({"reason": "r", "venues": []}, "non-empty list"),
    ({"reason": "r", "products": "BTC"}, "non-empty list"),
    ({"reason": "x" * 501}, "longer than"),
])
def test_trip_command_errors(req, error):
    with pytest.raises(RequestError, match=error):
        trip_command(req, known_venues=VENUES, default_operator="x")


def test_reset_requires_operator_and_reason():
    assert reset_command({"operator": "a", "reason": "b"}).operator == "a"
    for req in ({"operator": "a"}, {"reason": "b"}, {"operator": "", "reason": "b"}):
        with pytest.raises(RequestError, match="required"):
            reset_command(req)


def test_cash_flow_command():
    cmd = cash_flow_command({"venue": "ox-a", "amount": "-250.5"}, known_venues=VENUES, default_operator="o")
    assert cmd.amount == Decimal("-250.5") and cmd.venue == "ox-a" and cmd.operator == "o"
    for req, error in [({"venue": "ghost", "amount": "1"}, "unknown venue"),
                       ({"venue": "ox-a", "amount": 1.5}, "never a float"),
                       ({"venue": "ox-a", "amount": "abc"}, "not a decimal"),
                       ({"venue": "ox-a", "amount": "0"}, "non-zero"),
                       ({"venue": "ox-a", "amount": "NaN"}, "finite")]:
        with pytest.raises(RequestError, match=error):
            cash_flow_command(req, known_venues=VENUES, default_operator="o")


def test_encode_reply_is_one_line():
    raw = encode_reply({"ok": True, "amount": Decimal("1.5"), "text": "a\nb"})
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1


STATUS = {
    "ok": True, "pid": 42, "state": "tripped", "ready": True, "dry_run": False, "degraded": [],
    "reload_errors": ["cfg.yaml:3:5: rules[0].max: must be a number"],
    "trips": [{"trip_id": 3, "rule": "dd", "kind": "drawdown", "reason": "equity fell", "observed": "-6.2%",
               "threshold": "-5%", "source": "rule", "ts_wall_ms": 1_767_225_600_000, "scope": {}}],
    "last_reset": None,
    "venues": {"ox-a": {"connected": True, "trusted": True, "open_orders": 0, "equity": "9400",
                        "equity_currency": "USD", "last_seen_ago_s": 0.2, "cancel_state": "flat", "restarts": 1},
               "nado-b": {"connected": False, "trusted": False, "open_orders": 3, "equity": None,
                          "equity_currency": None, "last_seen_ago_s": None, "cancel_state": "cancelling"}},
    "rules": [{"name": "dd", "kind": "drawdown", "observed": "-6.2%", "threshold": "-5%", "breached": True,
               "latch": True}],
    "alarms": {"unverified:nado-b": "nado-b: cannot confirm open orders"},
    "counters": {"events": 10, "trips": 1, "last_trip_to_flat_ms": 12.5},
}


def test_render_status_has_every_section():
    text = render_status(STATUS)
    assert text.startswith("killswitch: TRIPPED")
    for needle in ("pid 42", "RELOAD FAILED", "rules[0].max", "#3", "-6.2%", "-5%", "equity fell",
                   "2026-01-01 00:00:00 UTC", "ox-a", "9400 USD", "flat", "nado-b", "DOWN", "cancelling",
                   "BREACHED", "ALARMS (1)", "cannot confirm", "events=10", "last_trip_to_flat_ms=12.5"):
        assert needle in text, needle


def test_render_status_minimal_armed():
    text = render_status({"state": "armed", "ready": False, "venues": {}, "rules": [], "alarms": {},
                          "last_reset": {"operator": "bob", "reason": "fixed", "ts_wall_ms": 0}})
    assert "ARMED" in text and "NOT READY" in text and "alarms: none" in text and "last reset: by bob" in text


def test_cli_requests_and_replies():
    args = SimpleNamespace(verb="trip", reason="r", operator="op", venue=["ox-a"], product=None)
    assert build_cli_request(args) == {"op": "trip", "reason": "r", "operator": "op", "venues": ["ox-a"]}
    assert build_cli_request(SimpleNamespace(verb="heartbeat", source="s")) == {"op": "heartbeat", "source": "s"}
    assert build_cli_request(SimpleNamespace(verb="reset", operator="o", reason="r"))["op"] == "reset"
    reply = {"ok": True, "state": "tripped", "trip_id": 4, "venues": {"ox-a": {"cancel_state": "cancelling",
                                                                             "open_orders": 2}}}
    assert render_command_reply("trip", reply) == "TRIPPED: trip #4 latched; venues: ox-a: cancelling (2 open)"
    assert "re-armed by o" in render_command_reply(
        "reset", {"ok": True, "state": "armed", "last_reset": {"operator": "o", "reason": "r"}})
    assert "nothing to reset" in render_command_reply("reset", {"ok": True, "state": "armed", "noop": True})
