"""Cost of one signed Hyperliquid cancel: fresh nonce -> msgpack -> action hash -> L1 EIP-712
digest -> signature -> JSON /exchange body, next to the official SDK's ``sign_l1_action``
(hyperliquid-python-sdk, eth-account typed data underneath) in the same run on the same inputs.

Signatures are checked byte-identical to the SDK's before timing.

    .venv/bin/python bench/signing_hyperliquid.py [--n 20000] [--sdk-n 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import orjson
from eth_account import Account

from _stats import reproduce_line, summarize, verdict
from killswitch.venues.hyperliquid import signing, wire
from killswitch.venues.hyperliquid.nonce import NonceSource

TARGET_MEDIAN_US = 100.0
# A throwaway benchmark key (not a secret: never funded, never used anywhere else).
BENCH_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
CANCELS = [(0, 91490942), (5, 59071663721), (4, 123456789)]


class FastCancel:
    """Exactly what HyperliquidSession does per cancel attempt (_attempt -> _sign)."""

    def __init__(self) -> None:
        self.signer = signing.FastSigner(BENCH_KEY)
        self.nonces = NonceSource(None)

    def one(self, now_ms: int) -> bytes:
        action = wire.cancel_action(CANCELS, fast=False)
        nonce = self.nonces.next(now_ms)
        sig, _ = signing.sign_l1(self.signer, action, nonce, signing.MAINNET)
        return wire.encode_exchange(action, nonce, sig.to_wire())


class SdkCancel:
    """The same cancel signed by the official SDK (what Exchange.bulk_cancel does)."""

    def __init__(self) -> None:
        from hyperliquid.utils.signing import sign_l1_action

        self.sign = sign_l1_action
        self.wallet = Account.from_key(BENCH_KEY)
        self.nonces = NonceSource(None)

    def one(self, now_ms: int, nonce: int | None = None) -> bytes:
        action = {"type": "cancel", "cancels": [{"a": a, "o": o} for a, o in CANCELS]}
        nonce = nonce if nonce is not None else self.nonces.next(now_ms)
        sig = self.sign(self.wallet, action, None, nonce, None, True)
        return orjson.dumps({"action": action, "nonce": nonce, "signature": sig, "vaultAddress": None,
                             "expiresAfter": None})


def check_identical() -> None:
    fast, sdk = FastCancel(), SdkCancel()
    body = fast.one(1_700_000_000_000)
    assert body == sdk.one(0, orjson.loads(body)["nonce"]), "fast path differs from the official SDK"


def time_each(fn, n: int) -> list[float]:
    now_ms = int(time.time() * 1000)
    out = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            fn(now_ms + i)
            out.append((clock() - t0) / 1e9)
    finally:
        gc.enable()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="fast-path cancels per run")
    ap.add_argument("--sdk-n", type=int, default=2_000, help="official-SDK cancels per run")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    check_identical()
    fast, sdk = FastCancel(), SdkCancel()
    time_each(fast.one, 2000)
    time_each(sdk.one, 100)
    runs = {"fast": [], "sdk": []}
    for r in range(args.runs):
        runs["fast"].append(summarize(time_each(fast.one, args.n)))
        runs["sdk"].append(summarize(time_each(sdk.one, args.sdk_n)))
        print(f"run {r + 1}/{args.runs}: fast p50={runs['fast'][-1].p50 * 1e6:.1f}us "
              f"sdk p50={runs['sdk'][-1].p50 * 1e6:.1f}us")
    med = {k: statistics.median(s.p50 for s in v) for k, v in runs.items()}
    p99 = {k: statistics.median(s.p99 for s in v) for k, v in runs.items()}
    print()
    print(f"one Hyperliquid cancel ({len(CANCELS)} orders): nonce + msgpack + action hash + L1 digest + "
          "signature + JSON body")
    print("bodies byte-identical to hyperliquid-python-sdk 0.24.0 sign_l1_action: yes")
    for k, label in (("fast", "fast path (precomputed EIP-712 hashes + coincurve)"),
                     ("sdk", "official SDK sign_l1_action (eth-account encode_typed_data)")):
        print(f"  {label:60s} median p50={med[k] * 1e6:8.1f} us  median p99={p99[k] * 1e6:8.1f} us")
    print(f"  speed-up vs the official SDK: {med['sdk'] / med['fast']:.1f}x")
    ok = med["fast"] * 1e6 <= TARGET_MEDIAN_US
    print(f"target median <= {TARGET_MEDIAN_US:.0f} us: {med['fast'] * 1e6:.1f} us -> {verdict(ok)} "
          f"(runs={args.runs}, n={args.n}/run)")
    print(reproduce_line())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
