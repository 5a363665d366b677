"""Benchmark harness: a simulated venue + the real daemon on loopback websockets.

Two shapes:

* ``proc_rig`` (the default for the figures): the sim and its probe run in this process, the
  daemon runs as ``killswitch run`` in a child process (bench/_daemon_proc.py) on the other
  core, and is observed through its control socket. Latency stamps are all taken here.
* ``rig``: sim and Daemon share one trio run (one thread); used where a benchmark needs the
  daemon's internals (the offline parse/engine costs) and as the pessimistic comparison.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import trio

from killswitch.config import load_config_text
from killswitch.daemon import Daemon
from killswitch.logs import configure_logging
from killswitch.model import ResetCommand, TripCommand
from killswitch.venues.oxfun.sim import OxfunSim
from killswitch.venues.vertex.sim import VertexSim

from killswitch.venues.hyperliquid.signing import FastSigner
from killswitch.venues.hyperliquid.sim.server import HyperliquidSim

from _daemon_proc import DaemonProcess, daemon_process

OX_MARKET = "BTC-USD-SWAP-LIN"
NADO_PRODUCT = 2
HL_COIN = "ETH"
# Throwaway benchmark keys (never funded anywhere): the account and the kill switch's agent.
HL_MASTER_KEY = "0x" + "5e" * 32
HL_AGENT_KEY = "0x" + "6f" * 32
HL_POST_OVER_WS = [True]  # set by trip_latency.py --hl-rest

DAEMON_YAML = """
daemon:
  state_dir: {state}
  control_socket: {state}/control.sock
  tick_interval: {tick}
  repoll_interval: 2s
  cancel_deadline: 5s
  startup_timeout: 10s
  log_format: json
venues:
{venues}
rules:
{rules}
"""


def ox_venue_yaml(name: str, sim: OxfunSim, env_prefix: str) -> str:
    return (f"  - name: {name}\n    kind: oxfun\n"
            f"    api_key: {{env: {env_prefix}_KEY}}\n    api_secret: {{env: {env_prefix}_SECRET}}\n"
            f"    ws_url: {sim.ws_url}\n    rest_url: {sim.rest_url}\n    markets: [{OX_MARKET}]\n"
            f"    poll_interval: 30s\n")


def nado_venue_yaml(name: str, sim: VertexSim, env_prefix: str, subaccount: str = "default",
                    products: str = "[2]") -> str:
    return (f"  - name: {name}\n    kind: nado\n    private_key: {{env: {env_prefix}_KEY}}\n"
            f"    gateway_ws_url: {sim.gateway_ws_url}\n    subscribe_ws_url: {sim.subscribe_ws_url}\n"
            f"    gateway_rest_url: {sim.gateway_rest_url}\n    trigger_url: {sim.trigger_url}\n"
            f"    chain_id: {sim.chain_id}\n    endpoint_address: \"{sim.endpoint_address}\"\n"
            f"    verify_contracts: false\n    subaccount_name: {subaccount}\n    products: {products}\n"
            f"    equity_poll_interval: 30s\n")


def hl_venue_yaml(name: str, sim: HyperliquidSim, env_prefix: str) -> str:
    return (f"  - name: {name}\n    kind: hyperliquid\n    private_key: {{env: {env_prefix}_KEY}}\n"
            f"    network: {sim.network}\n    account_address: \"{FastSigner(HL_MASTER_KEY).address}\"\n"
            f"    rest_url: {sim.rest_url}\n    ws_url: {sim.ws_url}\n    poll_interval: 30s\n    dms_after: 0s\n"
            f"    post_over_ws: {'true' if HL_POST_OVER_WS[0] else 'false'}\n"
            # back-to-back trips list the account ~2x a trip (40-80 weight): far past 1200/min;
            # the latency does not depend on it, so neither the sim nor the session caps it here
            f"    ip_weight_per_min: 1000000000\n")


async def start_hl(nursery) -> tuple[HyperliquidSim, str]:
    """A sim without the per-IP weight limit: a trip costs ~2 listings (40-80 weight), so the
    venue's 1200/min would pace the bench to ~15 trips a minute; the latency does not depend on it."""
    from decimal import Decimal

    sim = HyperliquidSim(ip_weight_per_min=10**9)
    await nursery.start(sim.serve, "127.0.0.1")
    master = FastSigner(HL_MASTER_KEY).address
    sim.core.add_account(master, usdc=Decimal(100_000), cum_vlm=Decimal(10**9))
    sim.core.add_agent(master, FastSigner(HL_AGENT_KEY).address, "killswitch")
    return sim, master


@dataclass(slots=True)
class Rig:
    kind: str  # oxfun | nado
    daemon: Daemon
    ox: OxfunSim | None = None
    nado: VertexSim | None = None
    ox_key: str = ""
    nado_sender: str = ""
    hl: HyperliquidSim | None = None
    hl_user: str = ""

    def sim_open(self) -> int:
        if self.hl is not None:
            return len(self.hl.core.accounts[self.hl_user].orders)
        if self.ox is not None:
            return len(self.ox.accounts[self.ox_key].orders)
        sub = self.nado.core.subaccount(self.nado_sender)
        return len(sub.orders) + len(sub.trigger_orders)

    async def place(self, n: int, *, start_level: int = 0) -> None:
        """n resting orders (far from the mark, so nothing fills)."""
        if self.hl is not None:
            for i in range(n):
                self.hl.place(self.hl_user, HL_COIN, is_buy=True, price=str(1000 + (start_level + i) % 500),
                              size="0.1")
        elif self.ox is not None:
            for i in range(n):
                await self.ox.place_orders(self.ox_key, market=OX_MARKET, side="BUY",
                                           price=str(30000 + (start_level + i) % 5000), qty="0.01")
        else:
            for i in range(n):
                self.nado.place_orders(self.nado_sender, product_id=NADO_PRODUCT,
                                       price=str(1000 + (start_level + i) % 500), qty="0.1")

    async def wait(self, pred, timeout_s: float = 10.0, poll_s: float = 0.001) -> None:
        with trio.fail_after(timeout_s):
            while not pred():
                await trio.sleep(poll_s)

    async def rearm(self) -> None:
        """Wait for flat (daemon's belief and the sim's book), then reset the latch."""
        engine = self.daemon.engine
        if not engine.latch.tripped and self.sim_open() > 0:
            # A round that did not trip (reported by the caller as a miss): clear it by hand.
            await self.daemon.send.send(TripCommand(reason="bench cleanup", source="bench"))
            await self.wait(lambda: engine.latch.tripped)
        await self.wait(lambda: engine.all_flat() and self.sim_open() == 0)
        await self.daemon.send.send(ResetCommand(operator="bench", reason="next round", source="bench"))
        await self.wait(lambda: not engine.latch.tripped)


@asynccontextmanager
async def rig(kind: str, rules_yaml: str, *, tick: str = "100ms", handle_signals: bool = False,
              log_path: Path | None = None) -> AsyncIterator[Rig]:
    state = Path(tempfile.mkdtemp(prefix="ks-bench-", dir=os.environ.get("KS_BENCH_STATE_PARENT")))
    log_file = open(log_path or state / "daemon.log", "a", encoding="utf-8")
    configure_logging("json", stream=log_file)
    try:
        async with trio.open_nursery() as nursery:
            env: dict[str, str] = {}
            if kind == "oxfun":
                ox = OxfunSim()
                await nursery.start(ox.serve, "127.0.0.1")
                key, secret = ox.add_account()
                env = {"BENCH_OX_KEY": key, "BENCH_OX_SECRET": secret}
                venues = ox_venue_yaml("ox-bench", ox, "BENCH_OX")
                r_kwargs: dict[str, Any] = {"ox": ox, "ox_key": key}
            elif kind == "hyperliquid":
                hl, user = await start_hl(nursery)
                env = {"BENCH_HL_KEY": HL_AGENT_KEY}
                venues = hl_venue_yaml("hl-bench", hl, "BENCH_HL")
                r_kwargs = {"hl": hl, "hl_user": user}
            else:
                nado = VertexSim(flavour="nado")
                await nursery.start(nado.serve, "127.0.0.1")
                sub = nado.create_subaccount()
                nado.set_balances(sub["sender"], spot={0: "100000"})
                env = {"BENCH_NADO_KEY": sub["private_key"]}
                venues = nado_venue_yaml("nado-bench", nado, "BENCH_NADO")
                r_kwargs = {"nado": nado, "nado_sender": sub["sender"]}
            text = DAEMON_YAML.format(state=state, tick=tick, venues=venues, rules=rules_yaml)
            config = load_config_text(text, str(state / "bench.yaml"))
            daemon = Daemon(config, handle_signals=handle_signals, environ=env)
            await nursery.start(daemon.run)
            r = Rig(kind, daemon, **r_kwargs)
            await r.wait(lambda: all(v["connected"] for v in daemon.status()["venues"].values()))
            yield r
            daemon.request_stop()
            nursery.cancel_scope.cancel()
    finally:
        log_file.close()


@dataclass(slots=True)
class ProcRig:
    """A sim in this process + the daemon in a child process (see module docstring)."""

    kind: str  # oxfun | nado
    daemon: DaemonProcess
    venue: str
    ox: OxfunSim | None = None
    nado: VertexSim | None = None
    ox_key: str = ""
    nado_sender: str = ""
    hl: HyperliquidSim | None = None
    hl_user: str = ""

    sim_open = Rig.sim_open
    place = Rig.place
    wait = Rig.wait

    async def rearm(self) -> None:
        """Wait for flat (daemon's verified belief and the sim's book), then reset the latch."""
        st = await self.daemon.status()
        if st["state"] != "tripped" and self.sim_open() > 0:
            await self.daemon.trip("bench cleanup")
        await self.wait(lambda: self.sim_open() == 0)
        await self.daemon.wait_status(
            lambda st: st["state"] == "tripped"
            and all(v["cancel_state"] == "flat" for v in st["venues"].values()))
        reply = await self.daemon.reset()
        assert reply["ok"], reply


@asynccontextmanager
async def proc_rig(kind: str, rules_yaml: str, *, tick: str = "100ms", pin: bool = True,
                   module: str = "killswitch.cli") -> AsyncIterator[ProcRig]:
    async with trio.open_nursery() as nursery:
        if kind == "oxfun":
            ox = OxfunSim()
            await nursery.start(ox.serve, "127.0.0.1")
            key, secret = ox.add_account()
            env = {"BENCH_OX_KEY": key, "BENCH_OX_SECRET": secret}
            venue = "ox-bench"
            venues = ox_venue_yaml(venue, ox, "BENCH_OX")
            r_kwargs: dict[str, Any] = {"ox": ox, "ox_key": key}
        elif kind == "hyperliquid":
            hl, user = await start_hl(nursery)
            env = {"BENCH_HL_KEY": HL_AGENT_KEY}
            venue = "hl-bench"
            venues = hl_venue_yaml(venue, hl, "BENCH_HL")
            r_kwargs = {"hl": hl, "hl_user": user}
        else:
            nado = VertexSim(flavour="nado")
            await nursery.start(nado.serve, "127.0.0.1")
            sub = nado.create_subaccount()
            nado.set_balances(sub["sender"], spot={0: "100000"})
            env = {"BENCH_NADO_KEY": sub["private_key"]}
            venue = "nado-bench"
            venues = nado_venue_yaml(venue, nado, "BENCH_NADO")
            r_kwargs = {"nado": nado, "nado_sender": sub["sender"]}
        text = DAEMON_YAML.replace("{tick}", tick).replace("{venues}", venues).replace("{rules}", rules_yaml)
        async with daemon_process(text, env, pin=pin, module=module) as dp:
            yield ProcRig(kind, dp, venue, **r_kwargs)
        nursery.cancel_scope.cancel()
