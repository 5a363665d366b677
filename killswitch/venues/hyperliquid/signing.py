"""Hyperliquid signing: L1 "phantom agent" EIP-712 and user-signed ``approveAgent``.

Everything constant (domain separators, type hashes, the keccak of ``source``) is computed
once; one L1 signature is then msgpack + three keccaks + one libsecp256k1 sign. The
reference path (the official SDK / eth-account ``encode_typed_data``) lives in the tests,
which check this module against it byte for byte and over random actions.

Pure: no I/O, no clock. ``source``/``hyperliquidChain`` come from the explicit network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import coincurve
import msgpack
from Crypto.Hash import keccak as _keccak_mod

from killswitch.secrets import Secret
from killswitch.venues.evm_keys import key_bytes

MAINNET = "mainnet"
TESTNET = "testnet"
NETWORKS = (MAINNET, TESTNET)
SDK_SIGNATURE_CHAIN_ID = "0x66eee"  # what the official SDK hard-codes (python-sdk#254)

_ZERO_WORD = bytes(32)


def keccak256(data: bytes) -> bytes:
    return _keccak_mod.new(digest_bits=256, data=data).digest()


def _word(n: int) -> bytes:
    return n.to_bytes(32, "big")


_DOMAIN_TYPEHASH = keccak256(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")


def domain_separator(name: str, version: str, chain_id: int) -> bytes:
    """The standard four-field domain with verifyingContract = 0x0."""
    return keccak256(_DOMAIN_TYPEHASH + keccak256(name.encode()) + keccak256(version.encode())
                     + _word(chain_id) + _ZERO_WORD)


L1_DOMAIN_SEPARATOR = domain_separator("Exchange", "1", 1337)
AGENT_TYPEHASH = keccak256(b"Agent(string source,bytes32 connectionId)")
APPROVE_AGENT_TYPEHASH = keccak256(
    b"HyperliquidTransaction:ApproveAgent(string hyperliquidChain,address agentAddress,string agentName,uint64 nonce)"
)
_SOURCE_HASH = {MAINNET: keccak256(b"a"), TESTNET: keccak256(b"b")}
_CHAIN_NAME = {MAINNET: "Mainnet", TESTNET: "Testnet"}


def source_of(network: str) -> str:
    return "a" if network == MAINNET else "b"


def chain_name(network: str) -> str:
    return _CHAIN_NAME[network]


def check_network(network: str) -> str:
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {NETWORKS}, not {network!r}")
    return network


# --------------------------------------------------------------------------------------
# L1 actions
# --------------------------------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True).pack  # str8 for 32..255-byte strings, minimal ints


def pack_action(action: dict) -> bytes:
    """msgpack of an action already in canonical form (see :mod:`.wire`)."""
    return _packb(action)


def action_hash(packed_action: bytes, nonce: int, vault_address: str | None = None,
                expires_after_ms: int | None = None) -> bytes:
    """The connectionId: keccak(msgpack ‖ nonce ‖ vault flag[+address] ‖ [0x00 ‖ expiresAfter])."""
    tail = nonce.to_bytes(8, "big")
    if vault_address is None:
        tail += b"\x00"
    else:
        tail += b"\x01" + address_bytes(vault_address)
    if expires_after_ms is not None:
        tail += b"\x00" + expires_after_ms.to_bytes(8, "big")
    return keccak256(packed_action + tail)


def l1_digest(connection_id: bytes, network: str) -> bytes:
    struct_hash = keccak256(AGENT_TYPEHASH + _SOURCE_HASH[network] + connection_id)
    return keccak256(b"\x19\x01" + L1_DOMAIN_SEPARATOR + struct_hash)


# --------------------------------------------------------------------------------------
# User-signed: approveAgent
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def user_domain_separator(signature_chain_id: int) -> bytes:
    return domain_separator("HyperliquidSignTransaction", "1", signature_chain_id)


def approve_agent_digest(*, hyperliquid_chain: str, agent_address: str, agent_name: str, nonce: int,
                         signature_chain_id: int) -> bytes:
    struct_hash = keccak256(
        APPROVE_AGENT_TYPEHASH + keccak256(hyperliquid_chain.encode()) + bytes(12) + address_bytes(agent_address)
        + keccak256(agent_name.encode()) + _word(nonce)
    )
    return keccak256(b"\x19\x01" + user_domain_separator(signature_chain_id) + struct_hash)


# --------------------------------------------------------------------------------------
# Keys, signatures, recovery
# --------------------------------------------------------------------------------------


class SignatureError(ValueError):
    """A signature that cannot be parsed or recovered (the venue: "Unable to recover signer.")."""


def address_bytes(address: str) -> bytes:
    text = address[2:] if address[:2] in ("0x", "0X") else address
    raw = bytes.fromhex(text)
    if len(raw) != 20:
        raise ValueError("an address is 20 bytes")
    return raw


def pubkey_address(pub: coincurve.PublicKey) -> str:
    return "0x" + keccak256(pub.format(compressed=False)[1:])[-20:].hex()


@dataclass(frozen=True, slots=True)
class Signature:
    r: int
    s: int
    v: int  # 27 | 28

    def to_wire(self) -> dict:
        # As the SDK posts it: to_hex(int), i.e. without leading zeros.
        return {"r": hex(self.r), "s": hex(self.s), "v": self.v}

    def to_bytes(self) -> bytes:
        return _word(self.r) + _word(self.s) + bytes((self.v,))


def parse_signature(obj) -> Signature:
    """``{"r","s","v"}`` as posted; r and s are read as integers (unpadded hex is legal)."""
    if not isinstance(obj, dict):
        raise SignatureError("signature is not an object")
    try:
        r, s, v = obj["r"], obj["s"], obj["v"]
        r_i = int(r, 16) if isinstance(r, str) else None
        s_i = int(s, 16) if isinstance(s, str) else None
    except (KeyError, ValueError, TypeError):
        raise SignatureError("signature fields unreadable") from None
    if r_i is None or s_i is None or not isinstance(v, int) or isinstance(v, bool):
        raise SignatureError("signature fields of the wrong type")
    if v not in (27, 28) or not (0 < r_i < 1 << 256) or not (0 < s_i < 1 << 256):
        raise SignatureError("signature out of range")
    return Signature(r_i, s_i, v)


class FastSigner:
    """Holds the key; never prints it."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: Secret | str | bytes) -> None:
        self._key = coincurve.PrivateKey(key_bytes(private_key))
        self.address = pubkey_address(self._key.public_key)  # lower-case 0x-hex

    def sign_digest(self, digest: bytes) -> Signature:
        sig = self._key.sign_recoverable(digest, hasher=None)  # RFC 6979, low-s: as eth-account
        return Signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64] + 27)

    def __repr__(self) -> str:
        return f"FastSigner(address={self.address})"


def recover_address(digest: bytes, sig: Signature) -> str:
    try:
        raw = _word(sig.r) + _word(sig.s) + bytes((sig.v - 27,))
        pub = coincurve.PublicKey.from_signature_and_message(raw, digest, hasher=None)
    except Exception:
        raise SignatureError("signature does not recover") from None
    return pubkey_address(pub)


def sign_l1(signer: FastSigner, canonical_action: dict, nonce: int, network: str, *,
            vault_address: str | None = None, expires_after_ms: int | None = None) -> tuple[Signature, bytes]:
    """(signature, connectionId) for an action already in canonical form."""
    cid = action_hash(pack_action(canonical_action), nonce, vault_address, expires_after_ms)
    return signer.sign_digest(l1_digest(cid, network)), cid
