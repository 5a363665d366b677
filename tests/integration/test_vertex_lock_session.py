"""VertexSession's order-entry lock against the simulated gateway: tx_nonce races (2022),
idempotence, the lock state surviving a restart, refusals that must be clear, and cancels
signed by the owner once the daemon's linked-signer key is refused."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import pytest
import trio

from killswitch.clock import Clock
from killswitch.secrets import Secret
from killswitch.venues.base import VenueRejected
from killswitch.venues.vertex.lock_state import LockState, LockStore
from killswitch.venues.vertex.session import VertexSession
from killswitch.venues.vertex.signing import FastSigner
from killswitch.venues.vertex.sim import VertexSim

from .vertex_fixtures import EventLog, make_config

STRATEGY_KEY = "0x" + "5a" * 32
STRATEGY = FastSigner(STRATEGY_KEY)


def _session(sim, acct, state_dir, *, owner=True, clock=None, **cfg):
    cfg = make_config(sim, wallet_address=acct["address"], archive_url=sim.archive_url, **cfg)
    return VertexSession(cfg, private_key=Secret(STRATEGY_KEY), clock=clock or Clock(),
                         owner_key=Secret(acct["private_key"]) if owner else None, state_dir=state_dir)


@asynccontextmanager
async def _world(tmp_path, *, flavour="nado", link=True, owner=True, run=True, **cfg):
    sim = VertexSim(flavour=flavour)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        acct = sim.create_subaccount()
        sim.set_balances(acct["sender"], spot={0: "100"})
        if link:
            sim.link_signer(acct["sender"], STRATEGY.address)
        session = _session(sim, acct, tmp_path, owner=owner, **cfg)
        log = EventLog()
        if run:
            send, recv = trio.open_memory_channel(1000)
            nursery.start_soon(log.drain, recv)
            await nursery.start(session.run, send)
        yield sim, acct, session, log
        nursery.cancel_scope.cancel()


def _links(sim) -> int:
    return [rt for _, rt, _ in sim.execute_log].count("execute_link_signer")


async def test_a_moved_tx_nonce_is_read_again_and_the_lock_retried():
    with trio.fail_after(15):
        async with _world(None) as (sim, acct, session, _):
            sim.set_faults(reject_code=2022, reject_count=1)
            message = await session.lock_order_entry(trip_id=7)
            assert sim.core.subaccount(acct["sender"]).linked_signer is None
            assert _links(sim) == 2 and "verified" in message


async def test_locking_twice_sends_one_link_signer(tmp_path):
    with trio.fail_after(15):
        async with _world(tmp_path) as (sim, acct, session, _):
            await session.lock_order_entry(trip_id=1)
            again = await session.lock_order_entry(trip_id=1)
            assert again.startswith("already locked") and _links(sim) == 1


async def test_the_lock_survives_a_restart_and_unlock_then_restores_the_strategy(tmp_path):
    with trio.fail_after(15):
        async with _world(tmp_path, run=False) as (sim, acct, session, _):
            await session.lock_order_entry(trip_id=3)
            saved = LockStore(tmp_path / f"nado-lock-{acct['sender']}.json").load()
            assert saved is not None and saved.strategy_signer == STRATEGY.address.lower() and saved.trip_id == 3
            restarted = _session(sim, acct, tmp_path)
            assert restarted._exec_signer().address.lower() == acct["address"]  # the owner signs cancels
            assert "restored by alice" in await restarted.unlock_order_entry(operator="alice")
            assert sim.core.subaccount(acct["sender"]).linked_signer == STRATEGY.address.lower()
            assert await restarted.unlock_order_entry(operator="alice") == "not locked"
            assert restarted._exec_signer().address == STRATEGY.address


async def test_refusals_name_the_cause(tmp_path):
    with trio.fail_after(15):
        async with _world(tmp_path, owner=False, run=False) as (sim, acct, session, _):
            with pytest.raises(VenueRejected, match="owner_private_key"):
                await session.lock_order_entry(trip_id=1)
        async with _world(tmp_path, link=False, run=False) as (sim, acct, session, _):
            with pytest.raises(VenueRejected, match="no linked signer: nothing to lock"):
                await session.lock_order_entry(trip_id=1)
            assert _links(sim) == 0 and not (tmp_path / f"nado-lock-{acct['sender']}.json").exists()


async def test_an_unreadable_lock_state_keeps_the_lock_and_refuses_to_guess_on_unlock(tmp_path):
    with trio.fail_after(15):
        async with _world(tmp_path, run=False) as (sim, acct, session, _):
            (tmp_path / f"nado-lock-{acct['sender']}.json").write_bytes(b"{not json")
            fresh = _session(sim, acct, tmp_path)
            assert fresh._exec_signer().address.lower() == acct["address"]
            with pytest.raises(VenueRejected, match="unreadable"):
                await fresh.unlock_order_entry(operator="alice")


async def test_a_refused_linked_signer_cancel_is_retried_signed_by_the_owner(tmp_path):
    with trio.fail_after(15):
        async with _world(tmp_path) as (sim, acct, session, _):
            sim.place_orders(acct["sender"], product_id=1, price="10", qty="1", count=2)
            sim.link_signer(acct["sender"], None)  # someone else revoked our (shared) key
            res = await session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=lambda a: None)
            assert res[-1].outcome == "ok" or any(r.outcome == "ok" for r in res), res
            assert any(r.code == "2028" and "retried signed by the owner" in r.message for r in res), res
            assert sim.open_orders(acct["sender"]) == {"orders": [], "trigger_orders": []}


async def test_vertex_flavour_asks_no_archive(tmp_path):
    with trio.fail_after(15):
        async with _world(tmp_path, flavour="vertex", kind="vertex") as (sim, acct, session, _):
            calls = []
            orig = sim.core.archive_query
            sim.core.archive_query = lambda *a, **k: calls.append(1) or orig(*a, **k)
            await session.lock_order_entry(trip_id=1)
            assert calls == [] and sim.core.subaccount(acct["sender"]).linked_signer is None


def test_lock_state_is_written_atomically_and_never_through_a_link(tmp_path):
    from killswitch.statefile import StateFileError

    path = tmp_path / "nado-lock-x.json"
    store = LockStore(path)
    store.save(LockState(STRATEGY.address.lower(), 4, 123))
    assert LockStore(path).load() == LockState(STRATEGY.address.lower(), 4, 123)
    assert not (tmp_path / "nado-lock-x.json.tmp").exists()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "nado-lock-x.json.tmp")
    with pytest.raises(StateFileError):
        store.save(LockState(STRATEGY.address.lower(), 5, 124))
    assert victim.read_text() == "keep"
    store.clear()
    assert not path.exists() and LockStore(path).load() is None


async def test_a_lock_held_across_a_restart_is_reported_to_the_engine(tmp_path):
    from killswitch.model import OrderEntryLockChanged

    with trio.fail_after(15):
        async with _world(tmp_path, run=False) as (sim, acct, session, _):
            await session.lock_order_entry(trip_id=9)
            restarted = _session(sim, acct, tmp_path, lock_verify_interval_s=0.1)
            log = EventLog()
            async with trio.open_nursery() as n:
                send, recv = trio.open_memory_channel(1000)
                n.start_soon(log.drain, recv)
                await n.start(restarted.run, send)
                (ev,) = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, OrderEntryLockChanged)])
                assert ev.locked and ev.ok and ev.trip_id == 9 and "across a restart" in ev.message
                n.cancel_scope.cancel()


async def test_a_breach_with_the_weekly_budget_used_up_alarms_the_wait_and_does_not_retry_at_once(tmp_path):
    from killswitch.model import VenueDegraded

    with trio.fail_after(15):
        async with _world(tmp_path, lock_verify_interval_s=0.05) as (sim, acct, session, log):
            await session.lock_order_entry(trip_id=1)
            sim.link_signer(acct["sender"], STRATEGY.address)  # re-linked behind our back ...
            wait_s = sim.spend_link_signer_budget(acct["sender"], 49)  # ... and the budget burnt
            failed = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, VenueDegraded)
                                                     and e.condition == "lock_breached" and "re-lock failed" in e.message])
            assert f"wait for {wait_s} seconds" in failed[0].message and session.name == failed[0].venue
            # Three more checks: each alarms the wait, none sends a link_signer.
            await log.wait_for(lambda evs: sum(1 for e in evs if isinstance(e, VenueDegraded)
                                               and "next re-lock in" in e.message) >= 3)
            assert _links(sim) == 1  # the lock only: the budget check spared the venue a 2030
            assert sim.core.subaccount(acct["sender"]).linked_signer == STRATEGY.address.lower()


async def test_checks_that_keep_failing_alarm_lock_unverified_until_one_succeeds(tmp_path):
    from killswitch.model import VenueDegraded

    with trio.fail_after(15):
        async with _world(tmp_path, lock_verify_interval_s=0.05) as (sim, acct, session, log):
            await session.lock_order_entry(trip_id=1)
            real = session._lock._query

            async def refused(qtype, **params):
                raise VenueRejected(f"query {qtype} failed: 5000 internal", code="5000")

            session._lock._query = refused  # the venue refuses the linked_signer query
            (on,) = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, VenueDegraded)
                                                    and e.condition == "lock_unverified"])
            assert on.active and "3 checks in a row" in on.message and "5000" in on.message
            session._lock._query = real
            await log.wait_for(lambda evs: [e for e in evs if isinstance(e, VenueDegraded)
                                            and e.condition == "lock_unverified" and not e.active])
