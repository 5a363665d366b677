"""Every credential kind the fleet config accepts connects to a real nats-server that requires
it: a token, and an nkey seed file (the operator CLI and a daemon, end to end: the daemon
trips and goes flat). User + password is covered by test_authorisation.py, TLS by test_tls.py."""

from __future__ import annotations

import os

import nkeys
import pytest
import trio

from killswitch.fleet.config import FleetConfig, FleetCredentials
from killswitch.fleet.natsserver import NatsServer
from killswitch.fleet.operator import fleet_trip
from killswitch.secrets import SecretRef
from tests.e2e.helpers import short_tmpdir
from tests.fleet.world import Instance, in_asyncio, sims, start_instance, until


def _nkey_pair(root) -> tuple[str, str]:
    """A user nkey: (public key for the server, path of the 0600 seed file)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    path = root / "user.nk"
    path.write_bytes(seed)
    path.chmod(0o600)
    return public, str(path)


@pytest.mark.parametrize("kind", ["token", "nkey"])
async def test_a_server_requiring_the_credential_kind_accepts_the_fleet(kind):
    with trio.fail_after(40), short_tmpdir() as root:
        if kind == "token":
            auth = 'authorization { token: "fleet-token-not-real" }'
            daemon_creds = "credentials: {token: {env: KS_NATS_TOKEN}}\n"
            op_creds = FleetCredentials(token=SecretRef("env", "KS_NATS_TOKEN"))
        else:
            public, seed_file = _nkey_pair(root)
            auth = f"authorization {{ users: [ {{ nkey: {public} }} ] }}"
            daemon_creds = f"credentials: {{nkey: {seed_file}}}\n"
            op_creds = FleetCredentials(nkey_seed_file=seed_file)
        env = {"KS_NATS_TOKEN": "fleet-token-not-real"}
        srv = NatsServer(root / "nats", authorization=auth).start()
        try:
            srv.wait_ready()
            async with sims(1) as (sim,), trio.open_nursery() as nursery:
                a = Instance("host-a", root / "a", sim, [srv.url], fleet_extra=daemon_creds)
                a.environ_extra = env
                await start_instance(nursery, a)
                await until(lambda: a.daemon.fleet.counters.status_sent > 0)  # connected and publishing
                op = FleetConfig(servers=(srv.url,), name="test", instance="op", silent_after_s=1.0,
                                 credentials=op_creds)
                code, board = await in_asyncio(lambda: fleet_trip(
                    op, reason="desk kill", operator="risk", deadline_s=10, environ=env, on_line=print))
                assert code == 0 and board.by_instance["host-a"].verdict == "flat"
                assert a.state == "tripped"
                nursery.cancel_scope.cancel()
        finally:
            srv.kill()
