"""Shared helpers for the Vertex/Nado integration tests (imported, not a conftest)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Callable

import trio

from killswitch.clock import Clock
from killswitch.secrets import Secret, SecretRef
from killswitch.venues.base import BackoffConfig, VertexConfig
from killswitch.venues.vertex.session import VertexSession
from killswitch.venues.vertex.sim import VertexSim


@dataclass(slots=True)
class ShiftClock(Clock):
    """Real clock plus a shift the test controls, for 'the rate window has passed'."""

    shift_s: float = 0.0

    def monotonic_s(self) -> float:
        return trio.current_time() + self.shift_s

    def wall_ms(self) -> int:
        return Clock.wall_ms(self) + int(self.shift_s * 1000)


class EventLog:
    """Drains the session's channel and lets tests wait for a condition on what arrived."""

    def __init__(self) -> None:
        self.events: list = []
        self._changed = trio.Event()

    async def drain(self, recv: trio.MemoryReceiveChannel) -> None:
        async for ev in recv:
            self.events.append(ev)
            self._changed.set()
            self._changed = trio.Event()

    def of(self, cls) -> list:
        return [e for e in self.events if isinstance(e, cls)]

    async def wait_for(self, pred: Callable[[list], Any]):
        while True:
            result = pred(self.events)
            if result:
                return result
            await self._changed.wait()


def make_config(sim: VertexSim, *, name: str = "nado-test", **overrides) -> VertexConfig:
    base = dict(
        name=name,
        private_key=SecretRef("env", "UNUSED"),
        kind=sim.core.flavour,
        gateway_ws_url=sim.gateway_ws_url,
        subscribe_ws_url=sim.subscribe_ws_url,
        gateway_rest_url=sim.gateway_rest_url,
        trigger_url=sim.trigger_url,
        chain_id=sim.chain_id,
        endpoint_address=sim.endpoint_address,
        products=(1, 2, 3, 4, 5),
        recv_window_s=30.0,
        equity_poll_interval_s=0.2,
        ping_interval_s=0.5,
        request_timeout_s=2.0,
        backoff=BackoffConfig(initial_s=0.05, max_s=0.5),
    )
    base.update(overrides)
    return VertexConfig(**base)


@asynccontextmanager
async def sim_and_session(*, flavour: str = "nado", sim_kwargs: dict | None = None, clock: Clock | None = None,
                          start_session: bool = True, **cfg_overrides):
    """Yields (sim, account, session, log) with the sim serving and the session started."""
    clock = clock or Clock()
    async with trio.open_nursery() as nursery:
        sim = VertexSim(flavour=flavour, clock=clock, **(sim_kwargs or {}))
        await nursery.start(sim.serve)
        account = sim.create_subaccount()
        session = None
        log = EventLog()
        if start_session:
            cfg = make_config(sim, **cfg_overrides)
            session = VertexSession(cfg, private_key=Secret(account["private_key"]), clock=clock)
            send, recv = trio.open_memory_channel(1000)
            nursery.start_soon(log.drain, recv)
            await nursery.start(session.run, send)
        yield sim, account, session, log
        nursery.cancel_scope.cancel()


class SentLog:
    def __init__(self) -> None:
        self.attempts: list = []

    def __call__(self, attempted) -> None:
        self.attempts.append(attempted)
