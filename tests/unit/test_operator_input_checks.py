"""Operator input is checked: trip products, reset --rebase, and what the CLI sends for them."""

import pytest

from killswitch.cli import build_parser
from killswitch.control.client import build_cli_request
from killswitch.control.protocol import RequestError, reset_command, trip_command
from killswitch.control.render import render_command_reply

KNOWN = frozenset({"BTC-USD-SWAP-LIN", "ETH-USD-SWAP-LIN"})


def trip(req):
    return trip_command({"reason": "r", **req}, known_venues=frozenset({"ox"}), default_operator="op",
                        known_products=KNOWN)


def test_an_unknown_product_is_refused_listing_the_known_ones():
    with pytest.raises(RequestError) as exc:
        trip({"products": ["BTC-USD-SWAP"]})
    assert exc.value.code == "unknown_product"
    assert "BTC-USD-SWAP-LIN, ETH-USD-SWAP-LIN" in str(exc.value) and "--force" in str(exc.value)


def test_force_trips_on_an_unknown_product_and_known_products_need_no_force():
    assert trip({"products": ["NEW"], "force": True}).scope.products == frozenset({"NEW"})
    assert trip({"products": ["BTC-USD-SWAP-LIN"]}).scope.products == frozenset({"BTC-USD-SWAP-LIN"})
    with pytest.raises(RequestError, match="true or false"):
        trip({"products": ["NEW"], "force": "yes"})


def test_reset_rebase_flag_is_parsed_and_defaults_to_keeping_baselines():
    assert reset_command({"operator": "o", "reason": "r"}).rebase is False
    assert reset_command({"operator": "o", "reason": "r", "rebase": True}).rebase is True


def test_cli_sends_force_and_rebase():
    p = build_parser()
    args = p.parse_args(["trip", "--reason", "r", "--product", "X", "--force"])
    assert build_cli_request(args)["force"] is True
    args = p.parse_args(["reset", "--operator", "o", "--reason", "r", "--rebase"])
    assert build_cli_request(args)["rebase"] is True
    args = p.parse_args(["reset", "--operator", "o", "--reason", "r"])
    assert build_cli_request(args)["rebase"] is False


def test_trip_reply_says_how_many_known_orders_the_scope_covers_per_venue():
    reply = {"ok": True, "state": "tripped", "trip_id": 1, "orders_in_scope": {"ox": 3, "nd": 0}, "venues": {}}
    assert "known orders in scope: ox: 3, nd: 0" in render_command_reply("trip", reply)
