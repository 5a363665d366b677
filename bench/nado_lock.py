"""Nado order-entry lock over loopback: how long a lock and an unlock take (archive budget
query, linked_signer query, nonces, owner-signed link_signer, confirming query), and how long
a runaway strategy's self re-link stays in force before the session re-locks it (the breach
window: its re-link -> linked signer zero again), against the simulated gateway.

The breach window is bounded by ``lock_verify_interval`` (the check's period) plus one
re-lock; each run uses a fresh subaccount (the sim's 50 link_signer per 7 days).

    .venv/bin/python bench/nado_lock.py [--runs 20] [--verify-interval 1.0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import reproduce_line, summarize  # noqa: E402
from killswitch.clock import Clock  # noqa: E402
from killswitch.secrets import Secret  # noqa: E402
from killswitch.venues.base import BackoffConfig, VertexConfig  # noqa: E402
from killswitch.secrets import SecretRef  # noqa: E402
from killswitch.venues.vertex import eip712, wire  # noqa: E402
from killswitch.venues.vertex.session import VertexSession  # noqa: E402
from killswitch.venues.vertex.signing import FastSigner  # noqa: E402
from killswitch.venues.vertex.sim import VertexSim  # noqa: E402

STRATEGY_KEY = "0x" + "5a" * 32  # a throwaway benchmark key, never funded
STRATEGY = FastSigner(STRATEGY_KEY)


def _config(sim: VertexSim, acct: dict, verify_s: float) -> VertexConfig:
    return VertexConfig(
        name="nado-bench", private_key=SecretRef("env", "UNUSED"), kind="nado", gateway_ws_url=sim.gateway_ws_url,
        subscribe_ws_url=sim.subscribe_ws_url, gateway_rest_url=sim.gateway_rest_url, trigger_url=sim.trigger_url,
        archive_url=sim.archive_url, chain_id=sim.chain_id, endpoint_address=sim.endpoint_address,
        wallet_address=acct["address"], products=(1, 2), lock_verify_interval_s=verify_s,
        backoff=BackoffConfig(initial_s=0.05, max_s=0.5))


def _relink_body(sim: VertexSim, acct: dict) -> bytes:
    sender = bytes.fromhex(acct["sender"][2:])
    nonce = sim.core.tx_nonces.get(acct["address"], 0)
    signer32 = eip712.address_bytes(STRATEGY.address) + b"\0" * 12
    digest = sim.core.domain.digest(eip712.hash_link_signer(sender, signer32, nonce))
    return wire.encode_link_signer(sender, signer32, nonce, STRATEGY.sign_digest(digest))


async def one_run(sim: VertexSim, verify_s: float, tmp: Path, i: int) -> tuple[float, float, float]:
    acct = sim.create_subaccount()  # a fresh key: its own weekly link_signer budget
    sim.set_balances(acct["sender"], spot={0: "100"})
    sim.link_signer(acct["sender"], STRATEGY.address)
    state_dir = tmp / f"run{i}"  # its own spend log: the previous run's weight is another wallet's
    state_dir.mkdir()
    session = VertexSession(_config(sim, acct, verify_s), private_key=Secret(STRATEGY_KEY), clock=Clock(),
                            owner_key=Secret(acct["private_key"]), state_dir=state_dir)
    sub = sim.core.subaccount(acct["sender"])
    async with trio.open_nursery() as n:
        send, recv = trio.open_memory_channel(10_000)

        async def drain():
            async for _ in recv:
                pass

        n.start_soon(drain)
        await n.start(session.run, send)
        t0 = time.perf_counter()
        await session.lock_order_entry(trip_id=i)
        lock_s = time.perf_counter() - t0
        sim.core.budgets.clear()  # the runaway's re-link must not meet our weight (not what is measured)
        await trio.sleep(verify_s * (i % 10) / 10)  # spread the re-link over the check period
        resp = await sim.handle_gateway(_relink_body(sim, acct))
        assert resp["status"] == "success", resp
        t1 = time.perf_counter()
        while sub.linked_signer is not None:
            await trio.sleep(0.001)
        breach_s = time.perf_counter() - t1
        sim.core.budgets.clear()
        t2 = time.perf_counter()
        await session.unlock_order_entry(operator="bench")
        unlock_s = time.perf_counter() - t2
        n.cancel_scope.cancel()
    return lock_s, breach_s, unlock_s


async def main(args) -> None:
    import tempfile

    sim = VertexSim(flavour="nado")
    sim.set_options(accept_revoked_signer_link=True)  # the doc's unconfirmed caveat: a runaway can re-link
    locks, breaches, unlocks = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as n:
            await n.start(sim.serve)
            for i in range(args.runs):
                lock_s, breach_s, unlock_s = await one_run(sim, args.verify_interval, Path(tmp), i)
                locks.append(lock_s)
                breaches.append(breach_s)
                unlocks.append(unlock_s)
            n.cancel_scope.cancel()
    print(f"lock (budget + queries + owner-signed link_signer + confirm): {summarize(locks).fmt('ms', 1000)}")
    print(f"unlock (query + link_signer back + confirm):                  {summarize(unlocks).fmt('ms', 1000)}")
    print(f"breach window, lock_verify_interval {args.verify_interval:g}s:  {summarize(breaches).fmt('ms', 1000)}")
    print(reproduce_line())


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--verify-interval", type=float, default=1.0)
    trio.run(main, p.parse_args())
