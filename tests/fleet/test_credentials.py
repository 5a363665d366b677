"""Every credential kind the fleet config accepts connects to a real nats-server that requires
it: a token, an nkey seed file and a JWT ``.creds`` file (the operator CLI and a daemon, end to
end: the daemon trips and goes flat); an expired or foreign ``.creds`` file is refused and
alarmed. User + password is covered by test_authorisation.py, TLS by test_tls.py."""

from __future__ import annotations

import os
import time

import nats
import nkeys
import pytest
import trio

from killswitch.fleet.bus import ensure_buckets
from killswitch.fleet.config import FleetConfig, FleetCredentials
from killswitch.fleet.natsserver import NatsServer
from killswitch.fleet.operator import fleet_trip
from killswitch.fleet.serverconf import permissions
from killswitch.fleet.subjects import Subjects
from killswitch.secrets import SecretRef
from tests.e2e.helpers import short_tmpdir
from tests.fleet.natsjwt import OperatorMode
from tests.fleet.world import Instance, in_asyncio, sims, start_all, start_instance, until


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
                op = FleetConfig(
                    servers=(srv.url,), name="test", instance="op", silent_after_s=1.0, credentials=op_creds
                )
                code, board = await in_asyncio(
                    lambda: fleet_trip(
                        op, reason="desk kill", operator="risk", deadline_s=10, environ=env, on_line=print
                    )
                )
                assert code == 0 and board.by_instance["host-a"].verdict == "flat"
                assert a.state == "tripped"
                nursery.cancel_scope.cancel()
        finally:
            srv.kill()


async def test_a_daemon_with_a_creds_file_trips_with_the_fleet_and_a_wrong_or_expired_one_alarms():
    """Decentralised auth: nats-server in operator mode (MEMORY resolver, the account's JWT
    preloaded, JetStream on for it); users are JWTs carrying the reference permissions."""
    subjects = Subjects("test")
    with trio.fail_after(40), short_tmpdir() as root:
        auth = OperatorMode.new()
        stranger = OperatorMode.new()  # an account this server does not know
        daemon_creds = auth.user_creds(
            root / "daemon-a.creds", "daemon-a", permissions("daemon", subjects, "host-a", "daemon-a")
        )
        risk_creds = auth.user_creds(
            root / "risk.creds", "risk", permissions("operator", subjects, user="risk")
        )
        expired = auth.user_creds(
            root / "expired.creds",
            "daemon-b",
            permissions("daemon", subjects, "host-b", "daemon-b"),
            exp=int(time.time()) - 60,
        )
        foreign = stranger.user_creds(root / "foreign.creds", "daemon-c")
        srv = NatsServer(root / "nats", extra_config=auth.server_config()).start()
        try:
            srv.wait_ready()

            async def provision():  # the operator's credentials create the buckets
                nc = await nats.connect(srv.url, user_credentials=str(risk_creds), inbox_prefix="_INBOX.risk")
                await ensure_buckets(nc.jetstream(), subjects, 1)
                await nc.close()

            await in_asyncio(provision)
            alarm_fast = "on_bus_loss: {after: 300ms, action: alarm}\n"
            async with sims(3) as sim_list, trio.open_nursery() as nursery:
                good = Instance(
                    "host-a",
                    root / "a",
                    sim_list[0],
                    [srv.url],
                    fleet_extra=f"credentials: {{creds: {daemon_creds}}}\ninbox_prefix: _INBOX.daemon-a\n",
                )
                bad = [
                    Instance(
                        name,
                        root / name,
                        sim,
                        [srv.url],
                        fleet_extra=f"credentials: {{creds: {creds}}}\n" + alarm_fast,
                    )
                    for name, sim, creds in (
                        ("host-b", sim_list[1], expired),
                        ("host-c", sim_list[2], foreign),
                    )
                ]
                await start_all(nursery, good, *bad)
                await until(lambda: good.daemon.fleet.counters.status_sent > 0)
                op = FleetConfig(
                    servers=(srv.url,),
                    name="test",
                    instance="op",
                    silent_after_s=1.0,
                    credentials=FleetCredentials(creds_file=str(risk_creds)),
                    inbox_prefix="_INBOX.risk",
                )
                code, board = await in_asyncio(
                    lambda: fleet_trip(op, reason="desk kill", operator="risk", deadline_s=10, on_line=print)
                )
                assert code == 0 and board.by_instance["host-a"].verdict == "flat"
                assert good.state == "tripped"
                assert good.daemon.fleet.bus.counters.reconcile_errors == 0  # it read the latch as itself
                for inst in bad:  # refused by the server: never connected, alarmed, still running
                    await until(lambda inst=inst: "fleet_bus" in inst.daemon.engine.alarms)
                    assert inst.daemon.fleet.bus.counters.connects == 0
                    assert inst.state == "armed" and not inst.exit_codes
                assert "authentication error" in srv.log_tail(20000)
                nursery.cancel_scope.cancel()
        finally:
            srv.kill()
