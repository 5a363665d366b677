"""EIP-712 hashing for the Vertex/Nado structs, done by hand (no typed-data machinery).

Type hashes and domain separators are constants per configuration, so they are computed
once; a struct hash is then a handful of 32-byte words and one or two keccak calls. The
reference path (eth-account ``encode_typed_data``) lives in the tests, which check this
module against it byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import ctypes
import importlib.machinery
import os
import threading

from Crypto.Hash import keccak as _keccak_mod

DOMAIN_VERSION = "0.0.1"
_U256 = 1 << 256


def _keccak256_reference(data: bytes) -> bytes:
    # pycryptodome's C keccak through its Python wrapper (~4 us a call, mostly wrapper).
    return _keccak_mod.new(digest_bits=256, data=data).digest()


def _keccak_lib_path() -> str:
    # pycryptodome loads its C library through ctypes, or through cffi when cffi is
    # installed (e.g. pulled in by cryptography); only the ctypes handle carries the path,
    # so with cffi find the same extension file next to the module.
    name = getattr(_keccak_mod._raw_keccak_lib, "_name", None)
    if name:
        return name
    folder = os.path.dirname(_keccak_mod.__file__)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, "_keccak" + suffix)
        if os.path.exists(path):
            return path
    raise OSError("pycryptodome's _keccak library not found")


def _direct_keccak256():
    """The same C keccak, called directly (~1.7 us): one reusable state per thread.

    Returns None when pycryptodome's library cannot be loaded this way (the wrapper path is
    used then). Checked against the wrapper at import (known-answer: empty input, a block
    boundary, a long input).
    """
    try:
        lib = ctypes.CDLL(_keccak_lib_path())
        vp = ctypes.c_void_p
        lib.keccak_init.argtypes = [ctypes.POINTER(vp), ctypes.c_size_t, ctypes.c_uint8]
        lib.keccak_reset.argtypes = [vp]
        lib.keccak_absorb.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
        lib.keccak_digest.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint8]
        lib.keccak_destroy.argtypes = [vp]
    except Exception:
        return None
    reset, absorb, digest = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
    local = threading.local()

    class _State:
        __slots__ = ("ptr", "out")

        def __init__(self) -> None:
            self.ptr = vp()
            if lib.keccak_init(ctypes.byref(self.ptr), 64, 24):  # capacity 512 bits, 24 rounds
                raise RuntimeError("keccak_init failed")
            self.out = ctypes.create_string_buffer(32)

        def __del__(self) -> None:
            lib.keccak_destroy(self.ptr)

    def keccak256(data: bytes) -> bytes:
        try:
            st = local.st
        except AttributeError:
            st = local.st = _State()
        ptr = st.ptr
        reset(ptr)
        absorb(ptr, data, len(data))
        digest(ptr, st.out, 32, 1)  # padding 0x01: Keccak, not SHA-3
        return st.out.raw

    try:
        for probe in (b"", b"\x01" * 135, b"\x02" * 136, b"\x03" * 137, bytes(range(256)) * 4):
            if keccak256(probe) != _keccak256_reference(probe):
                return None
    except Exception:
        return None
    return keccak256


keccak256 = _direct_keccak256() or _keccak256_reference


def _u(value: int, bits: int) -> bytes:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"value out of range for uint{bits}")
    return value.to_bytes(32, "big")


def _i(value: int, bits: int) -> bytes:
    lim = 1 << (bits - 1)
    if not -lim <= value < lim:
        raise ValueError(f"value out of range for int{bits}")
    return (value % _U256).to_bytes(32, "big")


def _b32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError("bytes32 value must be 32 bytes")
    return value


def address_bytes(address: str) -> bytes:
    h = address[2:] if address[:2] in ("0x", "0X") else address
    raw = bytes.fromhex(h)
    if len(raw) != 20:
        raise ValueError("an address is 20 bytes")
    return raw


def sender_bytes(address: str, subaccount_name: str) -> bytes:
    """bytes32 sender = 20-byte wallet address ‖ 12-byte ASCII name, right-padded with zeros."""
    name = subaccount_name.encode("ascii")
    if len(name) > 12:
        raise ValueError("subaccount name is at most 12 ASCII bytes")
    return address_bytes(address) + name.ljust(12, b"\0")


def product_address(product_id: int) -> str:
    """Nado's order verifyingContract: the product id as a 20-byte big-endian address."""
    return "0x" + product_id.to_bytes(20, "big").hex()


TYPE_STRINGS = {
    "EIP712Domain": "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
    "CancellationProducts": "CancellationProducts(bytes32 sender,uint32[] productIds,uint64 nonce)",
    "Cancellation": "Cancellation(bytes32 sender,uint32[] productIds,bytes32[] digests,uint64 nonce)",
    "StreamAuthentication": "StreamAuthentication(bytes32 sender,uint64 expiration)",
    "ListTriggerOrders": "ListTriggerOrders(bytes32 sender,uint64 recvTime)",
    "OrderVertex": "Order(bytes32 sender,int128 priceX18,int128 amount,uint64 expiration,uint64 nonce)",
    "OrderNado": "Order(bytes32 sender,int128 priceX18,int128 amount,uint64 expiration,uint64 nonce,uint128 appendix)",
    "LinkSigner": "LinkSigner(bytes32 sender,bytes32 signer,uint64 nonce)",
}
TYPE_HASHES = {k: keccak256(v.encode()) for k, v in TYPE_STRINGS.items()}
_TH_CP = TYPE_HASHES["CancellationProducts"]
_TH_C = TYPE_HASHES["Cancellation"]
_TH_SA = TYPE_HASHES["StreamAuthentication"]
_TH_LT = TYPE_HASHES["ListTriggerOrders"]
_TH_OV = TYPE_HASHES["OrderVertex"]
_TH_ON = TYPE_HASHES["OrderNado"]
_TH_LS = TYPE_HASHES["LinkSigner"]


@dataclass(frozen=True, slots=True)
class Domain:
    name: str  # "Vertex" | "Nado"
    chain_id: int
    verifying_contract: str
    version: str = DOMAIN_VERSION
    separator: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sep = keccak256(
            TYPE_HASHES["EIP712Domain"]
            + keccak256(self.name.encode())
            + keccak256(self.version.encode())
            + _u(self.chain_id, 256)
            + address_bytes(self.verifying_contract).rjust(32, b"\0")
        )
        object.__setattr__(self, "separator", sep)

    def digest(self, struct_hash: bytes) -> bytes:
        return keccak256(b"\x19\x01" + self.separator + struct_hash)

    def with_contract(self, verifying_contract: str) -> "Domain":
        return Domain(self.name, self.chain_id, verifying_contract, self.version)


_U32_ARRAY_CACHE: dict[tuple[int, ...], bytes] = {}


def _u32_array(values: Sequence[int]) -> bytes:
    # Product id lists repeat (the same few products on every cancel): hash each once.
    key = tuple(values)
    h = _U32_ARRAY_CACHE.get(key)
    if h is None:
        h = keccak256(b"".join(_u(v, 32) for v in key))
        if len(_U32_ARRAY_CACHE) < 4096:
            _U32_ARRAY_CACHE[key] = h
    return h


def hash_cancellation_products(sender: bytes, product_ids: Sequence[int], nonce: int) -> bytes:
    return keccak256(_TH_CP + _b32(sender) + _u32_array(product_ids) + _u(nonce, 64))


def hash_cancellation(sender: bytes, product_ids: Sequence[int], digests: Sequence[bytes], nonce: int) -> bytes:
    return keccak256(
        _TH_C
        + _b32(sender)
        + _u32_array(product_ids)
        + keccak256(b"".join(_b32(d) for d in digests))
        + _u(nonce, 64)
    )


def hash_stream_authentication(sender: bytes, expiration_ms: int) -> bytes:
    return keccak256(_TH_SA + _b32(sender) + _u(expiration_ms, 64))


def hash_list_trigger_orders(sender: bytes, recv_time_ms: int) -> bytes:
    return keccak256(_TH_LT + _b32(sender) + _u(recv_time_ms, 64))


def hash_link_signer(sender: bytes, signer: bytes, nonce: int) -> bytes:
    """``signer``: bytes32, the delegate's 20-byte address then 12 ignored bytes (zero revokes)."""
    return keccak256(_TH_LS + _b32(sender) + _b32(signer) + _u(nonce, 64))


def hash_order(
    sender: bytes,
    price_x18: int,
    amount: int,
    expiration: int,
    nonce: int,
    appendix: int | None,
) -> bytes:
    """Vertex Order when ``appendix`` is None, Nado Order (with uint128 appendix) otherwise."""
    body = _b32(sender) + _i(price_x18, 128) + _i(amount, 128) + _u(expiration, 64) + _u(nonce, 64)
    if appendix is None:
        return keccak256(_TH_OV + body)
    return keccak256(_TH_ON + body + _u(appendix, 128))
