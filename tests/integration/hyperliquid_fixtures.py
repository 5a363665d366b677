"""Shared helpers for the Hyperliquid integration and e2e tests (imported, not a conftest)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal

import trio

from killswitch.clock import Clock
from killswitch.secrets import Secret, SecretRef
from killswitch.venues.base import BackoffConfig
from killswitch.venues.hyperliquid import signing
from killswitch.venues.base import HyperliquidConfig
from killswitch.venues.hyperliquid.session import HyperliquidSession
from killswitch.venues.hyperliquid.sim.server import HyperliquidSim

from .vertex_fixtures import EventLog

MASTER_KEY = "0x" + "a1" * 32  # the account owner (locks need it)
KS_AGENT_KEY = "0x" + "b2" * 32  # the kill switch's own agent
STRATEGY_KEY = "0x" + "c3" * 32  # the strategy's agent
MASTER = signing.FastSigner(MASTER_KEY).address
KS_AGENT = signing.FastSigner(KS_AGENT_KEY).address
STRATEGY = signing.FastSigner(STRATEGY_KEY).address


async def start_sim(nursery, **kw) -> HyperliquidSim:
    """A testnet sim with one funded master (10 000 USDC, $2M volume), the kill switch's
    agent ``killswitch`` and the strategy's agent ``strategy``."""
    sim = HyperliquidSim(**kw)
    await nursery.start(sim.serve)
    sim.core.add_account(MASTER, usdc=Decimal(10_000), cum_vlm=Decimal(2_000_000))
    sim.core.add_agent(MASTER, KS_AGENT, "killswitch")
    sim.core.add_agent(MASTER, STRATEGY, "strategy")
    sim.core.accounts[MASTER].removal_pending_until_ms = 0
    return sim


def make_config(sim: HyperliquidSim, *, name: str = "hl-test", **overrides) -> HyperliquidConfig:
    base = dict(name=name, private_key=SecretRef("env", "UNUSED"), network=sim.network, account_address=MASTER,
                rest_url=sim.rest_url, ws_url=sim.ws_url, ping_interval_s=0.5, request_timeout_s=2.0,
                poll_interval_s=0.5, dms_after_s=0.0, backoff=BackoffConfig(initial_s=0.05, max_s=0.5))
    base.update(overrides)
    return HyperliquidConfig(**base)


@asynccontextmanager
async def sim_and_session(*, sim_kwargs: dict | None = None, clock: Clock | None = None, state_dir=None,
                          key: str = KS_AGENT_KEY, **cfg_overrides):
    async with trio.open_nursery() as nursery:
        sim = await start_sim(nursery, **(sim_kwargs or {}))
        session = HyperliquidSession(make_config(sim, **cfg_overrides), private_key=Secret(key),
                                     clock=clock or Clock(), state_dir=state_dir)
        send, recv = trio.open_memory_channel(1000)
        log = EventLog()
        nursery.start_soon(log.drain, recv)
        await nursery.start(session.run, send)
        yield sim, session, log
        nursery.cancel_scope.cancel()
