"""Known-answer vectors (vectors.json eip712) and fast-vs-reference property tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.secrets import Secret
from killswitch.venues.vertex import eip712
from killswitch.venues.vertex.eip712 import Domain, sender_bytes
from killswitch.venues.vertex.signing import FastSigner, SignatureError, recover_address

# Copy of vectors.json "eip712" (docs/venues/vertex-nado.md §13), so the test is self-contained;
# when the shared file is present it must agree with this copy.
V = {
 "private_key": "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
 "address": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
 "subaccount_name": "default",
 "sender": "0x2c7536e3605d9c16a7a3d7b1898e529396a65c2364656661756c740000000000",
 "domains": {
  "vertex-arbitrum": {
   "name": "Vertex",
   "version": "0.0.1",
   "chainId": 42161,
   "verifyingContract": "0xbbEE07B3e8121227AfCFe1E2B82772246226128e"
  },
  "nado-ink": {
   "name": "Nado",
   "version": "0.0.1",
   "chainId": 57073,
   "verifyingContract": "0x05ec92D78ED421f3D3Ada77FFdE167106565974E"
  }
 },
 "cases": [
  {
   "domain": "vertex-arbitrum",
   "type": "CancellationProducts",
   "productIds": [
    2
   ],
   "nonce": "1782579200000000001",
   "digest": "0x14c5da13e11d3d4e5a9fdf0efbb932dd57b85aac99d2670ab29dea3c1d9b2920",
   "signature": "0xfa71d14b6da09a58047579632be0f1cd8adbb2b3ed201494cda25479b4b26bd21eaf1dd4b3996fd3af1522acb6180a6c135d1aa908c15ac2b89fb74341e6e0241c"
  },
  {
   "domain": "vertex-arbitrum",
   "type": "CancellationProducts",
   "productIds": [],
   "nonce": "1782579200000000003",
   "digest": "0x656816ed6124938077720d5b044206027c5086e83cbb100475e841a593394545",
   "signature": "0x25ec8dbe3d02dc826de08934576b797ef37f2ca7639efadc5fa5e46889b7c4027fb9985e795a5877549d235591330fab87858deba2911f28fa6b0648c983cb121c"
  },
  {
   "domain": "vertex-arbitrum",
   "type": "StreamAuthentication",
   "expiration": "1700000090000",
   "digest": "0x7088825796e780c84f99ae05924c7b6b90cc3673aa9c3ada443a60b2b6cdc8e9",
   "signature": "0x1568518e16a4a3c867b507818257cf3801cd092a86e658ff44d7fa5e98ce29b14dbf935aee130c33650842addb982f9b3d1387144f484eeb76f463d0da28a3581c"
  },
  {
   "domain": "nado-ink",
   "type": "CancellationProducts",
   "productIds": [],
   "nonce": "1782579200000000003",
   "digest": "0xace942bad0348240df2feaa1d713372e3c5fd6f4ae5d46f84f8cb230d2f04664",
   "signature": "0x417f668caebbc7680bd4889187a9fc310f0e5bce20638ba375e9832e10c770762e00e602d028665d87cfd2e9ec7bf951f0c235b7e836a75729f77201f01ba84c1c"
  }
 ]
}
# A copy of the shared known-answer vectors kept in the repository, so a fresh clone runs this.
_VECTORS = Path(__file__).parents[1] / "vectors" / "vectors.json"


def test_embedded_vectors_match_vectors_file():
    assert json.loads(_VECTORS.read_text())["eip712"] == V


def _domain(key: str) -> Domain:
    d = V["domains"][key]
    return Domain(d["name"], d["chainId"], d["verifyingContract"], d["version"])


def test_sender_encoding():
    assert "0x" + sender_bytes(V["address"], V["subaccount_name"]).hex() == V["sender"]
    assert sender_bytes("0x" + "11" * 20, "").hex() == "11" * 20 + "00" * 12
    assert sender_bytes("0x" + "11" * 20, "test0")[20:].hex() == "7465737430" + "00" * 7
    with pytest.raises(ValueError):
        sender_bytes("0x" + "11" * 20, "x" * 13)


def test_signer_address():
    assert FastSigner(Secret(V["private_key"])).address == V["address"].lower()


def test_documented_constants():
    dom = _domain("vertex-arbitrum")
    assert dom.separator.hex() == "c3b5bcc2bc05b0450a6edb2b357eb5deccb68a8643a7476172116ec19088ed1a"
    assert eip712.TYPE_HASHES["CancellationProducts"].hex() == (
        "5df7b80590032f93b7413ad1522d53a56792c9b97bffcafbec25aaff11af921d"
    )


@pytest.mark.parametrize("case", V["cases"], ids=lambda c: f"{c['domain']}-{c['type']}-{c.get('nonce', '')}")
def test_vector(case):
    dom = _domain(case["domain"])
    sender = bytes.fromhex(V["sender"][2:])
    if case["type"] == "CancellationProducts":
        sh = eip712.hash_cancellation_products(sender, case["productIds"], int(case["nonce"]))
    elif case["type"] == "StreamAuthentication":
        sh = eip712.hash_stream_authentication(sender, int(case["expiration"]))
    else:
        pytest.fail(f"unknown vector type {case['type']}")
    digest = dom.digest(sh)
    assert "0x" + digest.hex() == case["digest"]
    sig = FastSigner(Secret(V["private_key"])).sign_digest(digest)
    assert "0x" + sig.hex() == case["signature"]
    assert recover_address(digest, sig) == V["address"].lower()


# ---------------------------------------------------------------------------------------
# Reference path: eth-account typed data
# ---------------------------------------------------------------------------------------

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def reference_sign(dom: Domain, primary: str, fields: list[dict], message: dict, key: bytes):
    full = {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": {
            "name": dom.name,
            "version": dom.version,
            "chainId": dom.chain_id,
            "verifyingContract": dom.verifying_contract,
        },
        "message": message,
    }
    signable = encode_typed_data(full_message=full)
    signed = Account.sign_message(signable, key)
    return bytes(signed.message_hash), bytes(signed.signature)


_CP_FIELDS = [
    {"name": "sender", "type": "bytes32"},
    {"name": "productIds", "type": "uint32[]"},
    {"name": "nonce", "type": "uint64"},
]
_C_FIELDS = [
    {"name": "sender", "type": "bytes32"},
    {"name": "productIds", "type": "uint32[]"},
    {"name": "digests", "type": "bytes32[]"},
    {"name": "nonce", "type": "uint64"},
]
_SA_FIELDS = [{"name": "sender", "type": "bytes32"}, {"name": "expiration", "type": "uint64"}]
_ORDER_FIELDS = [
    {"name": "sender", "type": "bytes32"},
    {"name": "priceX18", "type": "int128"},
    {"name": "amount", "type": "int128"},
    {"name": "expiration", "type": "uint64"},
    {"name": "nonce", "type": "uint64"},
]

keys = st.integers(min_value=1, max_value=(1 << 255)).map(lambda k: k.to_bytes(32, "big"))
b32 = st.binary(min_size=32, max_size=32)
u32 = st.integers(min_value=0, max_value=(1 << 32) - 1)
u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
i128 = st.integers(min_value=-(1 << 127), max_value=(1 << 127) - 1)
domains = st.builds(
    Domain,
    st.sampled_from(["Vertex", "Nado"]),
    st.integers(min_value=1, max_value=(1 << 64)),
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
)


def _check(dom, primary, fields, message, struct_hash, key):
    ref_digest, ref_sig = reference_sign(dom, primary, fields, message, key)
    digest = dom.digest(struct_hash)
    assert digest == ref_digest
    assert FastSigner(key).sign_digest(digest) == ref_sig


@settings(max_examples=40, deadline=None)
@given(dom=domains, key=keys, sender=b32, pids=st.lists(u32, max_size=6), nonce=u64)
def test_fast_matches_reference_cancellation_products(dom, key, sender, pids, nonce):
    msg = {"sender": sender, "productIds": pids, "nonce": nonce}
    _check(dom, "CancellationProducts", _CP_FIELDS, msg,
           eip712.hash_cancellation_products(sender, pids, nonce), key)


@settings(max_examples=25, deadline=None)
@given(dom=domains, key=keys, sender=b32, pairs=st.lists(st.tuples(u32, b32), max_size=5), nonce=u64)
def test_fast_matches_reference_cancellation(dom, key, sender, pairs, nonce):
    pids = [p for p, _ in pairs]
    digests = [d for _, d in pairs]
    msg = {"sender": sender, "productIds": pids, "digests": digests, "nonce": nonce}
    _check(dom, "Cancellation", _C_FIELDS, msg, eip712.hash_cancellation(sender, pids, digests, nonce), key)


@settings(max_examples=25, deadline=None)
@given(dom=domains, key=keys, sender=b32, exp=u64)
def test_fast_matches_reference_stream_auth(dom, key, sender, exp):
    msg = {"sender": sender, "expiration": exp}
    _check(dom, "StreamAuthentication", _SA_FIELDS, msg, eip712.hash_stream_authentication(sender, exp), key)


@settings(max_examples=25, deadline=None)
@given(dom=domains, key=keys, sender=b32, px=i128, amt=i128, exp=u64, nonce=u64,
       appendix=st.one_of(st.none(), st.integers(min_value=0, max_value=(1 << 128) - 1)))
def test_fast_matches_reference_order(dom, key, sender, px, amt, exp, nonce, appendix):
    msg = {"sender": sender, "priceX18": px, "amount": amt, "expiration": exp, "nonce": nonce}
    fields = list(_ORDER_FIELDS)
    if appendix is not None:
        msg["appendix"] = appendix
        fields.append({"name": "appendix", "type": "uint128"})
    _check(dom, "Order", fields, msg, eip712.hash_order(sender, px, amt, exp, nonce, appendix), key)


def test_recover_rejects_bad_signatures():
    digest = b"\x11" * 32
    sig = FastSigner(b"\x01" * 32).sign_digest(digest)
    with pytest.raises(SignatureError) as e:
        recover_address(digest, sig[:64])
    assert e.value.code == 2027
    with pytest.raises(SignatureError) as e:
        recover_address(digest, sig[:64] + b"\x05")
    assert e.value.code == 2034
    # v = 0/1 tolerated
    assert recover_address(digest, sig[:64] + bytes((sig[64] - 27,))) == FastSigner(b"\x01" * 32).address


def test_signer_repr_has_no_key():
    key = "0x" + "ab" * 32
    assert "ab" * 8 not in repr(FastSigner(Secret(key)))


# -- keccak256: the direct C call is the same function as pycryptodome's wrapper ------------

def test_keccak_direct_path_is_in_use_and_known_answer():
    assert eip712.keccak256 is not eip712._keccak256_reference  # the fast path loaded
    assert eip712.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_keccak_direct_matches_reference(data):
    assert eip712.keccak256(data) == eip712._keccak256_reference(data)


def test_keccak_direct_is_per_thread():
    import threading

    inputs = [bytes([i]) * (i * 7) for i in range(64)]
    want = [eip712._keccak256_reference(x) for x in inputs]
    errors = []

    def worker():
        for _ in range(200):
            for x, w in zip(inputs, want):
                if eip712.keccak256(x) != w:
                    errors.append(x)
                    return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_u32_array_cache_does_not_change_hashes_or_accept_bad_values():
    for pids in ([], [2], [2, 2], [1, 2, 3], [2**32 - 1]):
        ref = eip712._keccak256_reference(b"".join(p.to_bytes(32, "big") for p in pids))
        assert eip712._u32_array(pids) == ref
        assert eip712._u32_array(tuple(pids)) == ref  # cached
    with pytest.raises(ValueError):
        eip712._u32_array([2**32])
