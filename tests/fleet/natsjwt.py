"""NATS decentralised auth for the tests: operator, account and user nkeys, their JWTs (NATS
JWT v2, as nats-io/jwt encodes them) and a user ``.creds`` file, made with the ``nkeys``
package, so a test can run nats-server in operator mode without the ``nsc`` tool.

v2 encoding: ``b64url(header) . b64url(claims) . b64url(ed25519 signature of the first two
parts)``; header ``{"typ":"JWT","alg":"ed25519-nkey"}``; ``jti`` is the unpadded base32 of the
SHA-512/256 of the claims without ``jti``; the issuer signs with its own nkey.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED_ACCOUNT = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
JETSTREAM_ON = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Key:
    seed: bytes

    @classmethod
    def new(cls, prefix: int) -> Key:
        return cls(nkeys.encode_seed(os.urandom(32), prefix))

    @property
    def public(self) -> str:
        return nkeys.from_seed(self.seed).public_key.decode()

    def sign(self, data: bytes) -> bytes:
        return nkeys.from_seed(self.seed).sign(data)


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_jwt(issuer: Key, subject: str, name: str, nats: dict, *, exp: int | None = None) -> str:
    # The standard claims in nats-io/jwt's field order; jti hashes them with jti left out.
    claims: dict = {"exp": exp} if exp is not None else {}
    claims.update(iat=int(time.time()), iss=issuer.public, name=name, sub=subject)
    digest = hashlib.new("sha512_256", _json(claims)).digest()
    claims = {"jti": base64.b32encode(digest).decode().rstrip("="), **claims, "nats": {**nats, "version": 2}}
    if exp is not None:  # exp goes first, as Go's encoder writes it
        claims = {"exp": claims.pop("exp"), **claims}
    head, body = _b64(_json(HEADER)), _b64(_json(claims))
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


def operator_jwt(op: Key, system_account: str) -> str:
    return encode_jwt(
        op, op.public, "ks-test-operator", {"type": "operator", "system_account": system_account}
    )


def account_jwt(op: Key, account: Key, name: str, *, jetstream: bool) -> str:
    limits = {**UNLIMITED_ACCOUNT, **(JETSTREAM_ON if jetstream else {})}
    return encode_jwt(op, account.public, name, {"type": "account", "limits": limits})


def user_jwt(
    account: Key, user: Key, name: str, permissions: dict | None = None, exp: int | None = None
) -> str:
    """``permissions`` in the server-config form ({publish: {allow, deny}, subscribe: {...}})."""
    nats: dict = {"type": "user", "subs": -1, "data": -1, "payload": -1}
    if permissions:
        nats["pub"] = permissions.get("publish", {})
        nats["sub"] = permissions.get("subscribe", {})
    return encode_jwt(account, user.public, name, nats, exp=exp)


def write_creds(path: Path, jwt: str, user: Key) -> Path:
    """The ``.creds`` layout nsc writes (and nats-py reads): the user JWT, then its seed; mode 0600."""
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class OperatorMode:
    """One operator, a system account and an application account with JetStream, preloaded
    into a MEMORY resolver: :meth:`server_config` goes into ``NatsServer.extra_config``."""

    operator: Key
    system: Key
    account: Key

    @classmethod
    def new(cls) -> OperatorMode:
        return cls(
            Key.new(nkeys.PREFIX_BYTE_OPERATOR),
            Key.new(nkeys.PREFIX_BYTE_ACCOUNT),
            Key.new(nkeys.PREFIX_BYTE_ACCOUNT),
        )

    def server_config(self) -> str:
        sys_jwt = account_jwt(self.operator, self.system, "SYS", jetstream=False)
        app_jwt = account_jwt(self.operator, self.account, "KS", jetstream=True)
        return (
            f"operator: {operator_jwt(self.operator, self.system.public)}\n"
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n  {self.system.public}: {sys_jwt}\n  {self.account.public}: {app_jwt}\n}}\n"
        )

    def user_creds(
        self, path: Path, name: str, permissions: dict | None = None, exp: int | None = None
    ) -> Path:
        user = Key.new(nkeys.PREFIX_BYTE_USER)
        return write_creds(path, user_jwt(self.account, user, name, permissions, exp), user)
