"""`killswitch sim oxfun|vertex|nado|hyperliquid`: one simulated exchange, standalone, on loopback.

Prints its URLs, a freshly generated test account (these credentials exist only inside
this simulator process, which is why printing them is fine here and nowhere else) and a
YAML venue snippet to paste into a killswitch config; then serves until Ctrl-C / SIGTERM.
The admin API (``/admin/...``) is documented in the README (venue sections) and
summarised in README "Demo, simulators and benchmarks".
"""

from __future__ import annotations

import ipaddress
import secrets
import signal
import sys
from dataclasses import dataclass

import trio

from killswitch.venues.oxfun.sim import OxfunSim
from killswitch.venues.vertex.sim import VertexSim

EXIT_USAGE = 2
NADO_START_USDC = "10000"
OX_START_BALANCES = {"OX": "100000", "USDT": "10000"}


@dataclass(frozen=True, slots=True)
class SimBanner:
    title: str
    urls: tuple[tuple[str, str], ...]
    account: tuple[tuple[str, str], ...]
    env: tuple[tuple[str, str], ...]
    snippet: str

    def render(self) -> str:
        lines = [f"killswitch sim: {self.title} (Ctrl-C or SIGTERM to stop)", "urls:"]
        lines += [f"  {k}: {v}" for k, v in self.urls]
        lines.append("test account (generated now, valid only on this simulator):")
        lines += [f"  {k}: {v}" for k, v in self.account]
        lines.append("environment for the snippet below:")
        lines += [f"  export {k}={v}" for k, v in self.env]
        lines.append("YAML venue snippet (paste under `venues:` in a killswitch config):")
        lines += ["  " + ln for ln in self.snippet.rstrip().splitlines()]
        return "\n".join(lines)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ws_url(scheme: str, host: str, port: int, path: str) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"{scheme}://{h}:{port}{path}"


def oxfun_banner(sim: OxfunSim, api_key: str, api_secret: str) -> SimBanner:
    ws = _ws_url("ws", sim.host, sim.ws_port, "/v2/websocket")
    rest = sim.rest_url
    snippet = (
        "- name: ox-sim\n"
        "  kind: oxfun\n"
        "  api_key: {env: KILLSWITCH_SIM_OX_KEY}\n"
        "  api_secret: {env: KILLSWITCH_SIM_OX_SECRET}\n"
        f"  ws_url: {ws}\n"
        f"  rest_url: {rest}\n"
        "  markets: [BTC-USD-SWAP-LIN]\n"
    )
    return SimBanner(
        title=f"simulated OX.FUN on {sim.host}",
        urls=(("ws_url", ws), ("rest_url", rest), ("admin_url", f"{rest}/admin")),
        account=(("api_key", api_key), ("api_secret", api_secret)),
        env=(("KILLSWITCH_SIM_OX_KEY", api_key), ("KILLSWITCH_SIM_OX_SECRET", api_secret)),
        snippet=snippet,
    )


def vertex_banner(sim: VertexSim, flavour: str, account: dict) -> SimBanner:
    gw = _ws_url("ws", sim.ws_host, sim.ws_port, "/v1/ws")
    sub = _ws_url("ws", sim.ws_host, sim.ws_port, "/v1/subscribe")
    snippet = (
        f"- name: {flavour}-sim\n"
        f"  kind: {flavour}\n"
        f"  private_key: {{env: KILLSWITCH_SIM_{flavour.upper()}_KEY}}\n"
        f"  gateway_ws_url: {gw}\n"
        f"  subscribe_ws_url: {sub}\n"
        f"  gateway_rest_url: {sim.gateway_rest_url}\n"
        f"  trigger_url: {sim.trigger_url}\n"
        f"  archive_url: {sim.archive_url}\n"
        f"  chain_id: {sim.chain_id}\n"
        f"  endpoint_address: \"{sim.endpoint_address}\"\n"
        "  verify_contracts: false\n"
    )
    name = "Nado" if flavour == "nado" else "Vertex"
    return SimBanner(
        title=f"simulated {name} gateway on {sim.ws_host}",
        urls=(("gateway_ws_url", gw), ("subscribe_ws_url", sub), ("gateway_rest_url", sim.gateway_rest_url),
              ("trigger_url", sim.trigger_url), ("archive_url", sim.archive_url), ("admin_url", sim.admin_url)),
        account=(("private_key", account["private_key"]), ("address", account["address"]),
                 ("subaccount_sender", account["sender"])),
        env=((f"KILLSWITCH_SIM_{flavour.upper()}_KEY", account["private_key"]),),
        snippet=snippet,
    )


def hyperliquid_banner(sim, master_key: str, agent_key: str) -> SimBanner:
    from killswitch.venues.hyperliquid.signing import FastSigner

    master = FastSigner(master_key).address
    snippet = (
        "- name: hl-sim\n"
        "  kind: hyperliquid\n"
        "  private_key: {env: KILLSWITCH_SIM_HL_AGENT_KEY}\n"
        f"  network: {sim.network}\n"
        f"  account_address: \"{master}\"\n"
        f"  rest_url: {sim.rest_url}\n"
        f"  ws_url: {sim.ws_url}\n"
        "  dms_after: 60s\n"
    )
    return SimBanner(
        title=f"simulated Hyperliquid ({sim.network} signatures) on {sim.ws_host}",
        urls=(("rest_url", sim.rest_url), ("ws_url", sim.ws_url), ("admin_url", sim.admin_url)),
        account=(("master_private_key", master_key), ("master_address", master),
                 ("killswitch_agent_private_key", agent_key), ("killswitch_agent_address",
                                                              FastSigner(agent_key).address)),
        env=(("KILLSWITCH_SIM_HL_AGENT_KEY", agent_key),),
        snippet=snippet,
    )


async def serve(venue: str, host: str, port: int, network: str = "testnet") -> None:
    async with trio.open_nursery() as nursery:
        if venue == "oxfun":
            ox = OxfunSim()
            await nursery.start(ox.serve, host, port, port + 1 if port else 0)
            key, secret = ox.add_account(balances=dict(OX_START_BALANCES))
            banner = oxfun_banner(ox, key, secret)
        elif venue == "hyperliquid":
            from decimal import Decimal

            from killswitch.venues.hyperliquid.signing import FastSigner
            from killswitch.venues.hyperliquid.sim.server import HyperliquidSim

            hl = HyperliquidSim(network=network)
            await nursery.start(hl.serve, host, port)
            master_key, agent_key = "0x" + secrets.token_hex(32), "0x" + secrets.token_hex(32)
            master = FastSigner(master_key).address
            # $2M lifetime volume: past the scheduleCancel gate, so the backstop can arm.
            hl.core.add_account(master, usdc=Decimal(NADO_START_USDC), cum_vlm=Decimal(2_000_000))
            hl.core.add_agent(master, FastSigner(agent_key).address, "killswitch")
            banner = hyperliquid_banner(hl, master_key, agent_key)
        else:
            vx = VertexSim(flavour=venue)
            await nursery.start(vx.serve, host, port)
            account = vx.create_subaccount()
            vx.set_balances(account["sender"], spot={0: NADO_START_USDC})
            banner = vertex_banner(vx, venue, account)
        print(banner.render(), flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(f"killswitch sim: {signal.Signals(signum).name}, stopping", flush=True)
                break
        nursery.cancel_scope.cancel()


def main(args) -> int:
    host = args.host
    if not is_loopback(host):
        print(f"killswitch sim: refusing to listen on {host!r}: the simulators have no real authentication on "
              "their admin API and are meant for 127.0.0.1 / ::1 only", file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= args.port <= 65534:
        print(f"killswitch sim: --port must be in 0..65534, got {args.port}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trio.run(serve, args.venue, host, args.port, getattr(args, "network", "testnet"))
    except OSError as exc:
        print(f"killswitch sim: cannot listen on {host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
