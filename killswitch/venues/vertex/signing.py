"""Fast secp256k1 signing and signer recovery over precomputed EIP-712 digests.

coincurve (libsecp256k1) signs with RFC 6979 nonces and low-s, exactly like eth-account,
so signatures are byte-identical to the reference path at a fraction of the cost.
"""

from __future__ import annotations

import coincurve

from killswitch.secrets import Secret
from killswitch.venues.evm_keys import key_bytes

from .eip712 import keccak256


class SignatureError(ValueError):
    """A signature could not be parsed or recovered. ``code`` is the venue error code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def pubkey_address(pub: coincurve.PublicKey) -> str:
    return "0x" + keccak256(pub.format(compressed=False)[1:])[-20:].hex()


class FastSigner:
    """Holds the key; never prints it."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: Secret | str | bytes) -> None:
        try:
            self._key = coincurve.PrivateKey(key_bytes(private_key))
        except ValueError as exc:  # our own words only: a third-party message might quote the key
            reason = str(exc) if str(exc).startswith("private key ") else "private key is not a valid secp256k1 key"
            raise ValueError(reason) from None
        self.address = pubkey_address(self._key.public_key)  # lowercase 0x-hex

    def sign_digest(self, digest: bytes) -> bytes:
        """65-byte r‖s‖v with v = 27/28."""
        sig = self._key.sign_recoverable(digest, hasher=None)
        return sig[:64] + bytes((sig[64] + 27,))

    def __repr__(self) -> str:
        return f"FastSigner(address={self.address})"


def recover_address(digest: bytes, signature: bytes) -> str:
    """Signer address of ``signature`` over ``digest``; raises SignatureError (2027/2034/2028)."""
    if len(signature) != 65:
        raise SignatureError("invalid signature length", 2027)
    v = signature[64]
    if v in (27, 28):
        recid = v - 27
    elif v in (0, 1):
        recid = v
    else:
        raise SignatureError("invalid signature v", 2034)
    try:
        pub = coincurve.PublicKey.from_signature_and_message(signature[:64] + bytes((recid,)), digest, hasher=None)
    except Exception:
        raise SignatureError("signature does not recover", 2028) from None
    return pubkey_address(pub)
