"""A linked-signer key whose stream authentication the venue refuses (issue #13 item 9).

The sim is strict by default (the docs: StreamAuthentication must be signed by the wallet in
``sender``). The session signs it with the owner's key when configured; otherwise it keeps
running (cancels are signed by the linked signer, which the venue accepts), alarms, and polls
the open orders instead of streaming order_update.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import trio

from killswitch.clock import Clock
from killswitch.model import OpenOrdersSnapshot, OrderOpened, VenueConnected, VenueDegraded
from killswitch.secrets import Secret
from killswitch.venues.vertex.session import STREAM_AUTH_REFUSED, VertexSession
from killswitch.venues.vertex.signing import FastSigner
from killswitch.venues.vertex.sim import VertexSim

from .vertex_fixtures import EventLog, make_config

DELEGATE_KEY = "0x" + "0b" * 32


@asynccontextmanager
async def _run(owner: bool, *, poll_s: float = 0.2):
    clock = Clock()
    sim = VertexSim(flavour="nado", clock=clock)
    log = EventLog()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.serve)
        acct = sim.create_subaccount()
        sim.link_signer(acct["sender"], FastSigner(DELEGATE_KEY).address)
        cfg = make_config(sim, wallet_address=acct["address"], open_orders_poll_s=poll_s)
        session = VertexSession(cfg, private_key=Secret(DELEGATE_KEY), clock=clock,
                                owner_key=Secret(acct["private_key"]) if owner else None)
        send, recv = trio.open_memory_channel(1000)
        nursery.start_soon(log.drain, recv)
        await nursery.start(session.run, send)
        yield sim, acct, session, log
        nursery.cancel_scope.cancel()


async def test_refused_linked_signer_stream_auth_alarms_and_polls_open_orders():
    with trio.fail_after(10):
        async with _run(owner=False) as (sim, acct, session, log):
            (degraded,) = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, VenueDegraded)])
            assert degraded.active and degraded.condition == STREAM_AUTH_REFUSED
            assert "owner_private_key" in degraded.message
            await log.wait_for(lambda evs: [e for e in evs if isinstance(e, VenueConnected)])
            (d,) = sim.place_orders(acct["sender"], product_id=2, price="1900", qty="1")
            snap = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, OpenOrdersSnapshot)
                                                   and e.purpose == "poll" and e.orders])
            assert [o.venue_order_id for o in snap[-1].orders] == [d]
            # The cancel path works with the linked signer's signature.
            res = await session.cancel_all_orders(include_triggers=True, trip_id=1, on_sent=lambda a: None)
            assert all(r.outcome == "ok" for r in res), res
            assert sim.open_orders(acct["sender"])["orders"] == []


async def test_owner_key_authenticates_the_stream_for_a_linked_signer():
    with trio.fail_after(10):
        async with _run(owner=True) as (sim, acct, session, log):
            (d,) = sim.place_orders(acct["sender"], product_id=2, price="1900", qty="1")
            opened = await log.wait_for(lambda evs: [e for e in evs if isinstance(e, OrderOpened)])
            assert opened[0].order.venue_order_id == d
            assert not log.of(VenueDegraded)


def test_an_owner_key_of_another_wallet_is_a_clear_error():
    import pytest

    sim = VertexSim(flavour="nado")  # not serving: only its URLs feed the config
    owner = sim.core.create_subaccount()
    cfg = make_config(sim, wallet_address=owner.address)
    stranger_key = "0x" + "0d" * 32
    with pytest.raises(ValueError) as info:
        VertexSession(cfg, private_key=Secret(DELEGATE_KEY), clock=Clock(), owner_key=Secret(stranger_key))
    assert "owner_private_key" in str(info.value) and owner.address.lower() in str(info.value)
    assert stranger_key[2:] not in str(info.value)
