"""In-process fleet instances for the fleet tests: each a real Daemon with its own OX.FUN
simulator on 127.0.0.1 and its own state dir, all on one real NATS server or cluster."""

from __future__ import annotations

import asyncio
import textwrap
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from killswitch.audit import read_audit
from killswitch.config import load_config
from killswitch.daemon import Daemon
from killswitch.venues.oxfun.sim import OxfunSim
from tests.e2e.helpers import base_yaml

MARKET = "BTC-USD-SWAP-LIN"
OX_KEY = "ks-fleet-key-0001"
OX_SECRET = "ks-fleet-secret-not-real-0001"


def venue_yaml(sim: OxfunSim) -> str:
    return textwrap.dedent(f"""\
        venues:
          - name: ox-main
            kind: oxfun
            api_key: {{env: KS_FLEET_OX_KEY}}
            api_secret: {{env: KS_FLEET_OX_SECRET}}
            ws_url: {sim.ws_url}
            rest_url: {sim.rest_url}
            markets: [{MARKET}]
            equity_currency: USD
            ping_interval: 2s
            pong_timeout: 2s
            request_timeout: 2s
            poll_interval: 1s
        """)


def fleet_yaml(servers: list[str], instance: str, *, fleet: str = "test", extra: str = "") -> str:
    text = textwrap.dedent(f"""\
        fleet:
          servers: [{", ".join(servers)}]
          name: {fleet}
          instance: {instance}
          status_interval: 200ms
          silent_after: 1s
        """)
    return text + textwrap.indent(textwrap.dedent(extra), "  ")


RULES = "rules:\n  - {name: max-open, kind: max_open_orders, max: 1000}\n"


@dataclass
class Instance:
    name: str
    root: Path
    sim: OxfunSim
    servers: list[str]
    fleet_extra: str = ""
    rules: str = RULES
    daemon: Daemon | None = None
    cancel: trio.CancelScope | None = None
    exit_codes: list[int] = field(default_factory=list)
    environ_extra: dict[str, str] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "killswitch.yaml"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            fleet_yaml(self.servers, self.name, extra=self.fleet_extra)
            + base_yaml(self.root, venue_yaml(self.sim), self.rules)
        )

    def open_orders(self) -> int:
        return len(self.sim.open_orders(OX_KEY))

    def audit(self) -> list[dict]:
        return read_audit(self.root / "state" / "audit.jsonl")

    def audit_events(self, event: str) -> list[dict]:
        """What is on disk now (the audit log is written by its own task, shortly after)."""
        return [r for r in self.audit() if r.get("event") == event]

    async def events(self, event: str, n: int = 1) -> list[dict]:
        """The ``event`` records once there are at least ``n``; pending audit records are flushed
        first (a trip's own records come after its first cancel, from the engine's bookkeeping)."""
        while True:
            await self.daemon.audit.flush()
            found = self.audit_events(event)
            if len(found) >= n:
                return found
            await trio.sleep(0.02)

    @property
    def state(self) -> str:
        return self.daemon.engine.latch.state.value


async def start_instance(nursery: trio.Nursery, inst: Instance) -> Instance:
    inst.write_config()
    config = load_config(inst.config_path)
    daemon = Daemon(
        config,
        handle_signals=False,
        environ={"KS_FLEET_OX_KEY": OX_KEY, "KS_FLEET_OX_SECRET": OX_SECRET, **inst.environ_extra},
        services=_services(config),
    )
    inst.daemon = daemon

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as cs:
            inst.cancel = cs
            inst.exit_codes.append(await daemon.run(task_status=task_status))

    await nursery.start(run)
    return inst


async def start_all(nursery: trio.Nursery, *instances: Instance) -> None:
    """Start several at once: one that cannot reach the bus waits up to 2 s for the latch."""
    async with trio.open_nursery() as starting:
        for inst in instances:
            starting.start_soon(start_instance, nursery, inst)


def _services(config) -> list:
    from killswitch.fleet.service import fleet_service

    return [fleet_service] if config.fleet is not None else []


async def stop_instance(inst: Instance) -> None:
    """A crash, as far as the fleet can tell: the daemon is cancelled, its bus thread stopped."""
    assert inst.daemon is not None
    inst.daemon.request_stop()
    with trio.fail_after(10):
        while not inst.exit_codes:
            await trio.sleep(0.02)


async def until(predicate, step_s: float = 0.02) -> None:
    while not predicate():
        await trio.sleep(step_s)


async def in_asyncio(coro_fn):
    """Run an operator command (asyncio, nats-py) on a worker thread, as the CLI would in its process."""
    return await trio.to_thread.run_sync(lambda: asyncio.run(coro_fn()))


@asynccontextmanager
async def sims(n: int):
    async with trio.open_nursery() as nursery:
        out = []
        for _ in range(n):
            sim = await nursery.start(OxfunSim().serve)
            sim.add_account(OX_KEY, OX_SECRET, balances={"USD": "100000", "OX": "100000"})
            out.append(sim)
        try:
            yield out
        finally:
            nursery.cancel_scope.cancel()
