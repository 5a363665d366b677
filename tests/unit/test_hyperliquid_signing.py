"""Hyperliquid signing: the shared known-answer vectors byte for byte, and the fast path
against eth-account's ``encode_typed_data`` (the SDK's own reference path) over random actions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from hypothesis import given, settings
from hypothesis import strategies as st

from killswitch.venues.hyperliquid import signing, wire

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "hyperliquid.json").read_text())
KEY = VECTORS["meta"]["private_key"]
SIGNER = signing.FastSigner(KEY)


def _net(is_mainnet: bool) -> str:
    return signing.MAINNET if is_mainnet else signing.TESTNET


def test_constants_match_the_venue_doc():
    assert signing.L1_DOMAIN_SEPARATOR.hex() == "d79297fcdf2ffcd4ae223d01edaa2ba214ff8f401d7c9300d995d17c82aa4040"
    assert signing.AGENT_TYPEHASH.hex() == "26f05c2f7239b6983075e58321292d77b3aa173d19b27257ac96ab362570f508"
    assert signing.APPROVE_AGENT_TYPEHASH.hex() == "4464abf6148f115d79362d98320081aa2ae8a5c840083cb65820bffc21394378"
    assert signing.user_domain_separator(0x66EEE).hex() == \
        "feb1393ca4412a4ca577bd51d04f0a77033514c602f4d0a11490fb95f7428df6"


def test_signer_address_is_the_vector_signer():
    assert SIGNER.address == VECTORS["meta"]["signer_address"].lower()


def test_vector1_intermediates():
    v = VECTORS["vectors"][0]
    packed = signing.pack_action(wire.canonical_action(v["action"]))
    assert packed.hex() == "82a474797065a663616e63656ca763616e63656c739182a16100a16fce05740a7e"
    cid = signing.action_hash(packed, v["nonce"])
    digest = signing.l1_digest(cid, signing.MAINNET)
    assert digest.hex() == "c2e53b891b9794140a1e18358050e9c68cd1e7a5c6c902ed3e6d9bbd0d483275"


@pytest.mark.parametrize("vec", [v for v in VECTORS["vectors"] if v["kind"] == "l1_action"],
                         ids=lambda v: v["action"]["type"])
def test_l1_vectors_reproduced_byte_for_byte(vec):
    action = wire.canonical_action(vec["action"])
    sig, cid = signing.sign_l1(SIGNER, action, vec["nonce"], _net(vec["is_mainnet"]),
                               vault_address=vec["vault_address"], expires_after_ms=vec["expires_after"])
    assert "0x" + cid.hex() == vec["action_hash"]
    assert sig.to_wire() == vec["signature"]
    assert signing.recover_address(signing.l1_digest(cid, _net(vec["is_mainnet"])),
                                   signing.parse_signature(vec["signature"])) == SIGNER.address


def test_approve_agent_vector_reproduced_byte_for_byte():
    vec = next(v for v in VECTORS["vectors"] if v["kind"] == "approve_agent")
    a = vec["action"]
    digest = signing.approve_agent_digest(hyperliquid_chain=a["hyperliquidChain"], agent_address=a["agentAddress"],
                                          agent_name=a["agentName"], nonce=a["nonce"],
                                          signature_chain_id=int(a["signatureChainId"], 16))
    assert digest.hex() == "5be97ecb3a4454cb2d18cde82ec5eb81db5c2a118384c660c282494d44f94dd2"
    assert SIGNER.sign_digest(digest).to_wire() == vec["signature"]


def test_a_tampered_action_recovers_another_address():
    vec = VECTORS["vectors"][0]
    sig = signing.parse_signature(vec["signature"])
    other = dict(vec["action"], cancels=[{"a": 0, "o": 91490943}])
    cid = signing.action_hash(signing.pack_action(wire.canonical_action(other)), vec["nonce"])
    assert signing.recover_address(signing.l1_digest(cid, signing.MAINNET), sig) != SIGNER.address


def test_canonical_form_reorders_normalises_and_lowers():
    posted = {"grouping": "na", "type": "order",
              "orders": [{"t": {"trigger": {"tpsl": "sl", "triggerPx": "2600.0", "isMarket": True}}, "s": "0.10",
                          "r": True, "p": "1800.50", "b": False, "a": 4, "c": "0x" + "AB" * 16}]}
    c = wire.canonical_action(posted)
    assert list(c) == ["type", "orders", "grouping"]
    assert list(c["orders"][0]) == ["a", "b", "p", "s", "r", "t", "c"]
    assert list(c["orders"][0]["t"]["trigger"]) == ["isMarket", "triggerPx", "tpsl"]
    assert c["orders"][0]["p"] == "1800.5" and c["orders"][0]["s"] == "0.1"
    assert c["orders"][0]["c"] == "0x" + "ab" * 16


def test_canonical_keeps_f_false_so_it_hashes_differently():
    with_false = wire.canonical_action({"type": "cancel", "cancels": [{"a": 0, "o": 1}], "f": False})
    without = wire.canonical_action({"type": "cancel", "cancels": [{"a": 0, "o": 1}]})
    assert signing.pack_action(with_false) != signing.pack_action(without)


def test_canonical_action_names_the_bad_field():
    with pytest.raises(wire.WireError, match=r"cancels\[1\]\.o"):
        wire.canonical_action({"type": "cancel", "cancels": [{"a": 0, "o": 1}, {"a": 0, "o": "x"}]})


# -- property: fast path == eth-account typed-data path ---------------------------------------


def _reference_l1(action: dict, nonce: int, vault: str | None, expires: int | None, network: str):
    import msgpack
    from eth_utils import keccak

    data = msgpack.packb(action) + nonce.to_bytes(8, "big")
    data += b"\x00" if vault is None else b"\x01" + bytes.fromhex(vault[2:])
    if expires is not None:
        data += b"\x00" + expires.to_bytes(8, "big")
    cid = keccak(data)
    typed = {
        "domain": {"chainId": 1337, "name": "Exchange", "verifyingContract": "0x" + "00" * 20, "version": "1"},
        "types": {"Agent": [{"name": "source", "type": "string"}, {"name": "connectionId", "type": "bytes32"}],
                  "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}]},
        "primaryType": "Agent",
        "message": {"source": "a" if network == signing.MAINNET else "b", "connectionId": cid},
    }
    signed = Account.sign_message(encode_typed_data(full_message=typed), KEY)
    return cid, {"r": hex(signed.r), "s": hex(signed.s), "v": signed.v}


_u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
_cancels = st.lists(st.tuples(st.integers(0, 200_000), _u64), min_size=1, max_size=5)
_cloids = st.binary(min_size=16, max_size=16).map(lambda b: "0x" + b.hex())
_actions = st.one_of(
    st.builds(lambda c, f: wire.cancel_action(c, fast=f), _cancels, st.booleans()),
    st.builds(lambda c, f: wire.cancel_by_cloid_action(c, fast=f),
              st.lists(st.tuples(st.integers(0, 200_000), _cloids), min_size=1, max_size=4), st.booleans()),
    st.builds(wire.schedule_cancel_action, st.one_of(st.none(), _u64)),
    st.builds(wire.twap_cancel_action, st.integers(0, 200_000), _u64),
)


@settings(max_examples=60, deadline=None)
@given(action=_actions, nonce=_u64, vault=st.one_of(st.none(), st.binary(min_size=20, max_size=20)),
       expires=st.one_of(st.none(), _u64), mainnet=st.booleans())
def test_fast_signing_equals_eth_account_reference(action, nonce, vault, expires, mainnet):
    network = _net(mainnet)
    vault_hex = None if vault is None else "0x" + vault.hex()
    sig, cid = signing.sign_l1(SIGNER, action, nonce, network, vault_address=vault_hex, expires_after_ms=expires)
    ref_cid, ref_sig = _reference_l1(action, nonce, vault_hex, expires, network)
    assert cid == ref_cid
    assert sig.to_wire() == ref_sig
    # and the canonicaliser is a fixed point on what the builders emit
    assert signing.pack_action(wire.canonical_action(action)) == signing.pack_action(action)


@settings(max_examples=30, deadline=None)
@given(agent=st.binary(min_size=20, max_size=20), name=st.text(max_size=16), nonce=_u64, mainnet=st.booleans(),
       chain_id=st.sampled_from([0x66EEE, 0xA4B1, 1, 421614]))
def test_fast_approve_agent_equals_eth_account_reference(agent, name, nonce, mainnet, chain_id):
    from hyperliquid.utils.signing import sign_agent  # the official SDK as reference

    addr = "0x" + agent.hex()
    chain = "Mainnet" if mainnet else "Testnet"
    digest = signing.approve_agent_digest(hyperliquid_chain=chain, agent_address=addr, agent_name=name,
                                          nonce=nonce, signature_chain_id=chain_id)
    typed = {
        "domain": {"name": "HyperliquidSignTransaction", "version": "1", "chainId": chain_id,
                   "verifyingContract": "0x" + "00" * 20},
        "types": {"HyperliquidTransaction:ApproveAgent": [
            {"name": "hyperliquidChain", "type": "string"}, {"name": "agentAddress", "type": "address"},
            {"name": "agentName", "type": "string"}, {"name": "nonce", "type": "uint64"}],
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}]},
        "primaryType": "HyperliquidTransaction:ApproveAgent",
        "message": {"hyperliquidChain": chain, "agentAddress": addr, "agentName": name, "nonce": nonce},
    }
    ref = Account.sign_message(encode_typed_data(full_message=typed), KEY)
    assert SIGNER.sign_digest(digest).to_wire() == {"r": hex(ref.r), "s": hex(ref.s), "v": ref.v}
    if chain_id == 0x66EEE:
        wallet = Account.from_key(KEY)
        sdk = sign_agent(wallet, {"agentAddress": addr, "agentName": name, "nonce": nonce}, mainnet)
        assert SIGNER.sign_digest(digest).to_wire() == sdk
