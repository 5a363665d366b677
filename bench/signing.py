"""Cost of one Vertex/Nado cancel: fresh nonce -> EIP-712 digest -> signature -> JSON body.

Target: median <= 100 us on the fast path (precomputed domain/type hashes + coincurve).
Reference, measured in the same run on the same inputs: eth-account's
``encode_typed_data`` + ``Account.sign_message``, once with eth_keys' coincurve backend
(what you get when coincurve is installed) and once with eth_keys' pure-Python native
backend (what you get without it). Signatures are checked byte-identical before timing.

    .venv/bin/python bench/signing.py [--n 20000] [--ref-n 2000] [--native-n 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys.backends import CoinCurveECCBackend, NativeECCBackend
from eth_keys.datatypes import PrivateKey

from _stats import reproduce_line, summarize, verdict
from killswitch.venues.vertex import eip712, wire
from killswitch.venues.vertex.eip712 import Domain, sender_bytes
from killswitch.venues.vertex.nonce import NonceSource
from killswitch.venues.vertex.signing import FastSigner

TARGET_MEDIAN_US = 100.0
# A throwaway benchmark key (not a secret: never funded, never used anywhere else).
BENCH_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
NADO = Domain("Nado", 57073, "0x05ec92D78ED421f3D3Ada77FFdE167106565974E")
PRODUCT_IDS = [1, 2, 3, 4]
_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_CP_FIELDS = [
    {"name": "sender", "type": "bytes32"},
    {"name": "productIds", "type": "uint32[]"},
    {"name": "nonce", "type": "uint64"},
]


class FastCancel:
    """Exactly what VertexSession does per cancel attempt (see session._cancel_products_once)."""

    def __init__(self) -> None:
        self.signer = FastSigner(BENCH_KEY)
        self.sender = sender_bytes(self.signer.address, "default")
        self.nonces = NonceSource(recv_offset_ms=30_000)

    def one(self, now_ms: int) -> tuple[bytes, bytes, bytes]:
        nonce = self.nonces.next(now_ms)
        digest = NADO.digest(eip712.hash_cancellation_products(self.sender, PRODUCT_IDS, nonce.value))
        sig = self.signer.sign_digest(digest)
        return wire.encode_cancel_product_orders(self.sender, PRODUCT_IDS, nonce.value, sig), digest, sig


class ReferenceCancel:
    """The same cancel through eth-account's typed-data machinery (the tests' reference)."""

    def __init__(self, backend) -> None:
        self.key = PrivateKey(BENCH_KEY, backend=backend)
        self.sender = sender_bytes(FastSigner(BENCH_KEY).address, "default")
        self.nonces = NonceSource(recv_offset_ms=30_000)

    def one(self, now_ms: int, nonce_value: int | None = None) -> tuple[bytes, bytes, bytes]:
        nonce = nonce_value if nonce_value is not None else self.nonces.next(now_ms).value
        full = {
            "types": {"EIP712Domain": _DOMAIN_TYPE, "CancellationProducts": _CP_FIELDS},
            "primaryType": "CancellationProducts",
            "domain": {"name": NADO.name, "version": NADO.version, "chainId": NADO.chain_id,
                       "verifyingContract": NADO.verifying_contract},
            "message": {"sender": self.sender, "productIds": PRODUCT_IDS, "nonce": nonce},
        }
        signed = Account.sign_message(encode_typed_data(full_message=full), self.key)
        sig = bytes(signed.signature)
        return (wire.encode_cancel_product_orders(self.sender, PRODUCT_IDS, nonce, sig),
                bytes(signed.message_hash), sig)


def check_identical() -> None:
    fast = FastCancel()
    nonce = fast.nonces.next(1_700_000_000_000).value
    digest = NADO.digest(eip712.hash_cancellation_products(fast.sender, PRODUCT_IDS, nonce))
    sig = fast.signer.sign_digest(digest)
    for backend in (CoinCurveECCBackend(), NativeECCBackend()):
        _, ref_digest, ref_sig = ReferenceCancel(backend).one(0, nonce)
        assert ref_digest == digest and ref_sig == sig, f"reference mismatch with {type(backend).__name__}"


def time_each(fn, n: int) -> list[float]:
    """Per-call seconds; wall time is read around each call so percentiles are real."""
    now_ms = int(time.time() * 1000)
    out = []
    clock = time.perf_counter_ns
    gc.disable()  # a GC pause is not signing cost; it is measured separately by the latency benches
    try:
        for i in range(n):
            t0 = clock()
            fn(now_ms + (i >> 6))
            out.append((clock() - t0) / 1e9)
    finally:
        gc.enable()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="fast-path cancels per run")
    ap.add_argument("--ref-n", type=int, default=2_000, help="eth-account (coincurve backend) cancels per run")
    ap.add_argument("--native-n", type=int, default=300, help="eth-account (native backend) cancels per run")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    check_identical()
    fast, ref_cc, ref_native = FastCancel(), ReferenceCancel(CoinCurveECCBackend()), ReferenceCancel(NativeECCBackend())
    time_each(fast.one, 2000)  # warm-up
    time_each(ref_cc.one, 100)
    runs = {"fast": [], "eth_account_coincurve": [], "eth_account_native": []}
    for r in range(args.runs):
        runs["fast"].append(summarize(time_each(fast.one, args.n)))
        runs["eth_account_coincurve"].append(summarize(time_each(ref_cc.one, args.ref_n)))
        runs["eth_account_native"].append(summarize(time_each(ref_native.one, args.native_n)))
        print(f"run {r + 1}/{args.runs}: fast p50={runs['fast'][-1].p50 * 1e6:.1f}us "
              f"eth-account+coincurve p50={runs['eth_account_coincurve'][-1].p50 * 1e6:.1f}us "
              f"eth-account native p50={runs['eth_account_native'][-1].p50 * 1e6:.1f}us")

    med = {k: statistics.median(s.p50 for s in v) for k, v in runs.items()}
    p99 = {k: statistics.median(s.p99 for s in v) for k, v in runs.items()}
    print()
    print("one Nado cancel_product_orders (4 products): nonce + digest + signature + JSON body")
    print("signatures byte-identical to eth-account (coincurve and native backends): yes")
    for k, label in (("fast", "fast path (precomputed EIP-712 + coincurve)"),
                     ("eth_account_coincurve", "eth-account encode_typed_data+sign_message, coincurve backend"),
                     ("eth_account_native", "eth-account encode_typed_data+sign_message, native backend")):
        print(f"  {label:64s} median p50={med[k] * 1e6:8.1f} us  median p99={p99[k] * 1e6:8.1f} us")
    r_cc = med["eth_account_coincurve"] / med["fast"]
    r_native = med["eth_account_native"] / med["fast"]
    print(f"  speed-up vs eth-account with coincurve: {r_cc:.1f}x")
    print(f"  speed-up vs eth-account without coincurve (native backend): {r_native:.1f}x")
    ok = med["fast"] * 1e6 <= TARGET_MEDIAN_US
    print(f"target median <= {TARGET_MEDIAN_US:.0f} us: {med['fast'] * 1e6:.1f} us -> {verdict(ok)} "
          f"(runs={args.runs}, n={args.n}/run)")
    print(reproduce_line())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
