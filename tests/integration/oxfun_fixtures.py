"""Shared helpers for OX.FUN integration tests (sim + session over 127.0.0.1 sockets)."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import trio
from trio_websocket import open_websocket_url

from killswitch.clock import Clock
from killswitch.secrets import Secret, SecretRef
from killswitch.venues.base import BackoffConfig, OxfunConfig
from killswitch.venues.oxfun import wire
from killswitch.venues.oxfun.session import OxfunSession
from killswitch.venues.oxfun.sim import OxfunSim

FAST_BACKOFF = BackoffConfig(initial_s=0.05, max_s=0.2, multiplier=2.0, jitter=0.1)


def make_config(sim: OxfunSim, **overrides: Any) -> OxfunConfig:
    kw: dict[str, Any] = dict(
        name="ox-test", api_key=SecretRef("env", "OX_KEY"), api_secret=SecretRef("env", "OX_SECRET"),
        ws_url=sim.ws_url, rest_url=sim.rest_url, request_timeout_s=2.0, ping_interval_s=5.0, pong_timeout_s=2.0,
        poll_interval_s=30.0, backoff=FAST_BACKOFF,
    )
    kw.update(overrides)
    return OxfunConfig(**kw)


@dataclass
class Recorder:
    """Collects every event the session sends; tests wait on conditions, never on luck."""

    events: list = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def consume(self, recv: trio.MemoryReceiveChannel) -> None:
        async for ev in recv:
            self.events.append(ev)
            self._changed.set()
            self._changed = trio.Event()

    def of(self, cls: type) -> list:
        return [e for e in self.events if isinstance(e, cls)]

    async def wait_for(self, pred: Callable[[], Any], timeout_s: float = 5.0) -> Any:
        with trio.fail_after(timeout_s):
            while True:
                value = pred()
                if value:
                    return value
                await self._changed.wait()


async def wait_until(pred: Callable[[], Any], timeout_s: float = 5.0, poll_s: float = 0.01) -> Any:
    with trio.fail_after(timeout_s):
        while True:
            value = pred()
            if value:
                return value
            await trio.sleep(poll_s)


@dataclass
class Harness:
    sim: OxfunSim
    session: OxfunSession
    rec: Recorder
    api_key: str
    api_secret: str
    nursery: trio.Nursery


@asynccontextmanager
async def running_sim(**options: Any):
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(OxfunSim(**options).serve)
        try:
            yield sim
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def harness(*, sim_options: dict | None = None, clock: Clock | None = None, start: bool = True,
                  setup: Callable[[OxfunSim, str], Any] | None = None, **cfg_overrides: Any):
    async with running_sim(**(sim_options or {})) as sim:
        key, secret = sim.add_account()
        if setup is not None:
            await setup(sim, key)
        session = OxfunSession(make_config(sim, **cfg_overrides), api_key=Secret(key), api_secret=Secret(secret),
                               clock=clock or Clock(), close_grace_s=0.3)
        send, recv = trio.open_memory_channel(10_000)
        rec = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.consume, recv)
            if start:
                await nursery.start(session.run, send)
            try:
                yield Harness(sim, session, rec, key, secret, nursery)
            finally:
                nursery.cancel_scope.cancel()


class RawClient:
    """A bare websocket client for sim enforcement tests."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.tags = wire.TagCounter("t")

    async def send(self, obj: Any) -> None:
        await self.ws.send_message(obj if isinstance(obj, str) else orjson.dumps(obj).decode())

    async def recv_json(self, pred: Callable[[dict], bool] = lambda f: True, timeout_s: float = 3.0) -> dict:
        with trio.fail_after(timeout_s):
            while True:
                text = await self.ws.get_message()
                if text == "pong":
                    continue
                frame = orjson.loads(text)
                if pred(frame):
                    return frame

    async def login(self, key: str, secret: str, ts_ms: int | None = None) -> dict:
        await self.send(wire.encode_login(key, secret, ts_ms if ts_ms is not None else Clock().wall_ms(), self.tags.next()))
        return await self.recv_json(lambda f: f.get("event") == "login")


@asynccontextmanager
async def raw_client(sim: OxfunSim):
    async with open_websocket_url(sim.ws_url, connect_timeout=2, disconnect_timeout=0.5) as ws:
        client = RawClient(ws)
        hello = await client.recv_json()
        assert hello["event"] == "Welcome" and "nonce" in hello
        yield client
