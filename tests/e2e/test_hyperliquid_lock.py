"""Order-entry lock on Hyperliquid: a locked trip deregisters the strategy's agent (the master
approves a throwaway under its name), cancels, and the strategy's next order is refused with
the venue's own text; ``reset --unlock`` restores the strategy's key (audited with the uid)."""

from __future__ import annotations

import os
import time
from decimal import Decimal

import httpx
import trio

from killswitch.control.client import build_cli_request
from killswitch.control.protocol import reset_command, trip_command
from killswitch.venues.hyperliquid import signing, wire
from tests.integration.hyperliquid_fixtures import KS_AGENT_KEY, MASTER, MASTER_KEY, STRATEGY, STRATEGY_KEY, start_sim

from .daemon_harness import audit_of, daemon_yaml, running_daemon, wait_for


def venue_yaml(sim) -> str:
    return f"""
  - name: hl-main
    kind: hyperliquid
    private_key: {{env: HL_KEY}}
    master_key: {{env: HL_MASTER_KEY}}
    strategy_agent_name: strategy
    agent_cooldown: 200ms
    network: {sim.network}
    account_address: "{MASTER}"
    rest_url: {sim.rest_url}
    ws_url: {sim.ws_url}
    ping_interval: 1s
    poll_interval: 1s
    request_timeout: 3s
    dms_after: 0s
"""


RULES = """
  - name: too-many
    kind: max_open_orders
    venues: [hl-main]
    max: 100
    action: {cancel_all: null, lock: true}
"""


async def strategy_order(sim, nonce_box: list[int]) -> dict:
    nonce_box[0] = max(nonce_box[0] + 1, int(time.time() * 1000))
    action = wire.limit_order_action(1, True, Decimal(2000), Decimal("0.1"))
    sig, _ = signing.sign_l1(signing.FastSigner(STRATEGY_KEY), action, nonce_box[0], sim.network)
    async with httpx.AsyncClient() as c:
        r = await c.post(sim.rest_url + "/exchange", content=wire.encode_exchange(action, nonce_box[0], sig.to_wire()))
    return r.json()


async def test_locked_trip_refuses_the_strategy_and_reset_unlock_restores_it(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery, agent_removal_cooldown_ms=100)
            acct = sim.core.accounts[MASTER]
            nonce = [0]
            assert "resting" in (await strategy_order(sim, nonce))["response"]["data"]["statuses"][0]
            env = {"HL_KEY": KS_AGENT_KEY, "HL_MASTER_KEY": MASTER_KEY}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                await wait_for(lambda: d.engine.state.open_count("hl-main") == 1)
                # the control protocol's trip --lock / reset --unlock, as the server builds them
                peer_uid = os.getuid()
                await d.send.send(trip_command({"op": "trip", "reason": "lock test", "operator": "tester",
                                                "lock": True}, known_venues=frozenset({"hl-main"}),
                                               default_operator="x"))
                await wait_for(lambda: d.engine.locks.get("hl-main") == "locked")
                await wait_for(lambda: not acct.orders and d.engine.all_flat())
                refused = await strategy_order(sim, nonce)
                assert refused == {"status": "err",
                                   "response": f"L1 error: User or API Wallet {STRATEGY} does not exist."}
                assert d.engine.status()["venues"]["hl-main"]["order_entry"] == "locked"
                await d.send.send(reset_command({"op": "reset", "operator": "tester", "reason": "done",
                                                 "unlock": True}, peer_uid))
                await wait_for(lambda: "hl-main" not in d.engine.locks)
                accepted = await strategy_order(sim, nonce)
                assert "resting" in accepted["response"]["data"]["statuses"][0], accepted
                recs = await audit_of(d)
            nursery.cancel_scope.cancel()
        events = [r["event"] for r in recs]
        assert events.index("trip") < events.index("lock_requested") < events.index("order_entry_locked")
        unlock = next(r for r in recs if r["event"] == "unlock_requested")
        assert unlock["operator"] == "tester" and unlock["operator_uid"] == os.getuid()
        assert next(r for r in recs if r["event"] == "order_entry_unlocked")["operator"] == "tester"


async def test_a_rule_with_lock_true_locks_on_breach(tmp_path):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            sim = await start_sim(nursery, agent_removal_cooldown_ms=100)
            env = {"HL_KEY": KS_AGENT_KEY, "HL_MASTER_KEY": MASTER_KEY}
            async with running_daemon(tmp_path, daemon_yaml(tmp_path, venue_yaml(sim), RULES), env) as d:
                sim.place(MASTER, "ETH", is_buy=True, price="2000", size="0.1", count=101)
                await wait_for(lambda: d.engine.latch.tripped)
                await wait_for(lambda: d.engine.locks.get("hl-main") == "locked")
                await wait_for(lambda: not sim.core.accounts[MASTER].orders and d.engine.all_flat())
                assert (await strategy_order(sim, [0]))["status"] == "err"
                assert sim.core.accounts[MASTER].named_agents["strategy"][0] != STRATEGY.lower()
            nursery.cancel_scope.cancel()


def test_cli_flags_map_to_the_control_protocol():
    import argparse

    trip = build_cli_request(argparse.Namespace(verb="trip", reason="r", operator="o", venue=None, product=None,
                                                lock=True))
    assert trip["lock"] is True
    reset = build_cli_request(argparse.Namespace(verb="reset", operator="o", reason="r", unlock=True))
    assert reset["unlock"] is True
    assert reset_command(reset, 1234).unlock and reset_command(reset, 1234).operator_uid == 1234
    assert trip_command(trip, known_venues=frozenset(), default_operator="x").lock
