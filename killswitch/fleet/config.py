"""The optional ``fleet:`` section of the daemon's YAML, and the settings it resolves to.

    fleet:
      servers: [nats://10.0.0.5:4222, nats://10.0.0.6:4222]
      name: prod                 # the fleet (subject prefix ks.prod.)
      instance: host-a           # this daemon (default: the host name)
      credentials:               # at most one of user+password / token / creds / nkey
        user: daemon-host-a
        password: {env: KS_NATS_PASSWORD}
      tls: {ca: /etc/ks/nats-ca.pem, cert: ..., key: ...}
      inbox_prefix: _INBOX.daemon-host-a   # replies to this user only (see serverconf)
      status_interval: 1s
      on_bus_loss: {after: 10s, action: alarm}   # or trip
      latch_replicas: 3          # replicas of the buckets, when this daemon creates them

Secrets are references (see killswitch.secrets); they resolve at start-up like venue keys.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping

from killswitch.fleet.policy import ACTIONS, BusLossPolicy
from killswitch.fleet.settings import DEFAULT_INBOX_PREFIX, BusSettings, TlsSettings
from killswitch.fleet.subjects import NAME_RE, SUBJECT_RE
from killswitch.schema.reader import INVALID, Invalid, MapReader, item_str
from killswitch.secrets import SecretRef

SERVER_RE = re.compile(r"^(nats|tls)://[^\s/]+$")


@dataclass(frozen=True, slots=True)
class FleetCredentials:
    user: str | None = None
    password: SecretRef | None = None
    token: SecretRef | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None


@dataclass(frozen=True, slots=True)
class FleetConfig:
    servers: tuple[str, ...]
    name: str
    instance: str
    credentials: FleetCredentials = FleetCredentials()
    tls: TlsSettings | None = None
    inbox_prefix: str = DEFAULT_INBOX_PREFIX
    status_interval_s: float = 1.0
    silent_after_s: float = 5.0  # status --fleet calls an instance silent after this
    on_bus_loss: BusLossPolicy = BusLossPolicy()
    latch_replicas: int = 1
    ack_flat_timeout_s: float = 30.0  # longest an instance tracks one fleet trip towards flat

    def bus_settings(
        self, environ: Mapping[str, str] | None = None, *, client_name: str | None = None
    ) -> BusSettings:
        """Resolve secret references (raises SecretError, never with the value)."""
        c = self.credentials
        return BusSettings(
            servers=self.servers,
            client_name=client_name or f"killswitch/{self.name}/{self.instance}",
            user=c.user,
            password=c.password.resolve(environ) if c.password else None,
            token=c.token.resolve(environ) if c.token else None,
            creds_file=c.creds_file,
            nkey_seed_file=c.nkey_seed_file,
            tls=self.tls,
            inbox_prefix=self.inbox_prefix,
        )


def _server(node) -> str:
    value = item_str(node)
    if not SERVER_RE.match(value):
        raise ValueError(f"{value!r} must be a NATS URL like nats://host:4222 or tls://host:4222")
    return value


def parse_fleet(r: MapReader, parse_secret: Callable[[MapReader, str], Any]) -> FleetConfig | None:
    """Parse the ``fleet:`` mapping; issues go to the reader's context (file, line, key)."""
    servers = r.list("servers", _server, required=True, non_empty=True)
    name = r.str(
        "name", required=True, pattern=NAME_RE, hint="letters, digits, '_' or '-' (a NATS subject token)"
    )
    default_instance = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "instance"
    instance = r.str(
        "instance",
        default_instance,
        pattern=NAME_RE,
        hint="letters, digits, '_' or '-' (a NATS subject token)",
    )
    creds = FleetCredentials()
    c = r.sub("credentials")
    if c is not None:
        given = [k for k in ("user", "token", "creds", "nkey") if c.has(k)]
        if len(given) > 1:
            c.error(given[1], f"give one of user+password, token, creds or nkey (also has {given[0]!r})")
        user = c.str("user", None)
        password = parse_secret(c, "password") if c.has("password") or c.has("user") else None
        token = parse_secret(c, "token") if c.has("token") else None
        creds_file = c.file_path("creds", None)
        nkey = c.file_path("nkey", None)
        c.finish()
        creds = FleetCredentials(
            user=user,
            password=password,
            token=token,
            creds_file=None if creds_file is None else str(creds_file),
            nkey_seed_file=None if nkey is None else str(nkey),
        )
    tls = None
    t = r.sub("tls")
    if t is not None:
        ca, cert, key = t.file_path("ca", None), t.file_path("cert", None), t.file_path("key", None)
        server_name = t.str("server_name", None)
        if (cert is None) != (key is None):
            t.error("cert" if cert is None else "key", "cert and key go together (client certificate)")
        t.finish()
        tls = TlsSettings(
            ca_file=str(ca) if ca else None,
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
            server_name=server_name,
        )
    inbox_prefix = r.str(
        "inbox_prefix",
        DEFAULT_INBOX_PREFIX,
        pattern=SUBJECT_RE,
        hint="a literal NATS subject like _INBOX.daemon-host-a (no wildcards)",
    )
    policy = BusLossPolicy()
    p = r.sub("on_bus_loss")
    if p is not None:
        after = p.duration("after", policy.after_s, max_s=Decimal(3600))
        action = p.str("action", policy.action, choices=ACTIONS)
        p.finish()
        if not isinstance(after, Invalid) and not isinstance(action, Invalid):
            policy = BusLossPolicy(after_s=after, action=action)
    status_interval = r.duration("status_interval", 1.0, max_s=Decimal(60))
    silent_after = r.duration("silent_after", None, max_s=Decimal(3600))
    replicas = r.int("latch_replicas", 1, min_value=1, max_value=5)
    ack_flat = r.duration("ack_flat_timeout", 30.0, max_s=Decimal(600))
    r.finish()
    values = (
        servers,
        name,
        instance,
        status_interval,
        silent_after,
        replicas,
        ack_flat,
        creds.user,
        creds.password,
        creds.token,
        creds.creds_file,
        creds.nkey_seed_file,
        tls,
        inbox_prefix,
    )
    if any(v is INVALID or isinstance(v, Invalid) for v in values):
        return None
    return FleetConfig(
        servers=servers,
        name=name,
        instance=instance,
        credentials=creds,
        tls=tls,
        inbox_prefix=inbox_prefix,
        status_interval_s=status_interval,
        silent_after_s=silent_after if silent_after is not None else max(5.0, 3 * status_interval),
        on_bus_loss=policy,
        latch_replicas=replicas,
        ack_flat_timeout_s=ack_flat,
    )
