"""secp256k1 private keys as the EVM venues (Vertex/Nado, Hyperliquid) take them in config.

Shared by the venues' signers so a key is parsed, and refused, the same way everywhere; the
error never contains the key.
"""

from __future__ import annotations

from killswitch.secrets import Secret


def key_bytes(private_key: Secret | str | bytes) -> bytes:
    """32 raw bytes from a Secret, ``0x``-hex text or bytes; ValueError (without the value) otherwise."""
    raw = private_key.reveal() if isinstance(private_key, Secret) else private_key
    if isinstance(raw, str):
        text = raw.strip()
        text = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError("private key is not hex") from None
    if len(raw) != 32:
        raise ValueError("private key must be 32 bytes")
    return raw
