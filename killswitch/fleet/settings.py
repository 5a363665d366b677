"""Connection settings for the fleet bus, and the pure bits of connecting: backoff and the
``nats.connect`` keyword arguments (the one place a credential is revealed).

No I/O here: the config section resolves to these, the bus shell and the CLI consume them.
"""

from __future__ import annotations

import random
import ssl
from dataclasses import dataclass
from typing import Any, Callable

from killswitch.secrets import Secret

DEFAULT_INBOX_PREFIX = "_INBOX"  # nats-py's own default


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


@dataclass(frozen=True, slots=True)
class BusSettings:
    servers: tuple[str, ...]
    client_name: str
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    creds_file: str | None = None  # NATS .creds (JWT + nkey seed)
    nkey_seed_file: str | None = None
    tls: TlsSettings | None = None
    # Replies to this client's requests (JetStream API answers, key-value reads) arrive under
    # <inbox_prefix>.<id>: a per-user prefix lets the server's permissions keep one user from
    # subscribing to another's replies (serverconf renders the matching subscribe permission).
    inbox_prefix: str = DEFAULT_INBOX_PREFIX
    connect_timeout_s: float = 2.0
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0
    ping_interval_s: float = 2.0
    max_outstanding_pings: int = 2  # dead connection detected in ~ping_interval * (pings + 1)
    request_timeout_s: float = 2.0
    pending_bytes: int = 1 << 20  # what nats-py buffers while reconnecting

    def __repr__(self) -> str:  # the servers and names only; credentials never print
        return f"BusSettings(servers={self.servers!r}, client_name={self.client_name!r})"


def reconnect_delay_s(
    attempt: int, lo_s: float, hi_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with +-25 % jitter (so a fleet does not reconnect in lockstep)."""
    base = min(hi_s, lo_s * (2 ** min(attempt, 30)))
    return base * (0.75 + 0.5 * rand())


def connect_options(s: BusSettings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` (the only place credentials are revealed)."""
    opts: dict[str, Any] = {
        "servers": list(s.servers),
        "name": s.client_name,
        "connect_timeout": s.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "ping_interval": s.ping_interval_s,
        "max_outstanding_pings": s.max_outstanding_pings,
        "pending_size": s.pending_bytes,
        "reconnect_time_wait": s.reconnect_min_s,
        "inbox_prefix": s.inbox_prefix,
    }
    if s.user is not None:
        opts["user"] = s.user
    if s.password is not None:
        opts["password"] = s.password.reveal()
    if s.token is not None:
        opts["token"] = s.token.reveal()
    if s.creds_file:
        opts["user_credentials"] = s.creds_file
    if s.nkey_seed_file:
        opts["nkeys_seed"] = s.nkey_seed_file
    if s.tls is not None:
        opts["tls"] = s.tls.context()
        if s.tls.server_name:
            opts["tls_hostname"] = s.tls.server_name
    return opts
