"""Authorisation by the bus: a nats-server with the reference permissions
(killswitch.fleet.serverconf). A daemon's credentials trip, ack, publish status and read the
latch, but cannot reset; an operator's can do both; a strategy's can do neither."""

from __future__ import annotations

import asyncio

import nats
import pytest
import trio

from killswitch.fleet.bus import ensure_buckets
from killswitch.fleet.config import FleetConfig, FleetCredentials
from killswitch.fleet.messages import FleetReset, FleetTrip, encode
from killswitch.fleet.natsserver import NatsServer
from killswitch.fleet.operator import fleet_trip
from killswitch.fleet.serverconf import User, authorization_block
from killswitch.fleet.subjects import Subjects
from killswitch.secrets import SecretRef
from tests.e2e.helpers import short_tmpdir
from tests.fleet.world import Instance, in_asyncio, sims, start_instance, until

USERS = [
    User("daemon-a", "daemon-a-pw", "daemon", "host-a"),
    User("risk", "risk-pw", "operator"),
    User("strat", "strat-pw", "strategy"),
]
CREDS = "credentials: {user: daemon-a, password: {env: KS_NATS_PW}}\n"


@pytest.fixture
def secured_server():
    with short_tmpdir() as root:
        srv = NatsServer(root / "nats", authorization=authorization_block("test", USERS)).start()
        try:
            srv.wait_ready()
            yield srv
        finally:
            srv.kill()


async def publish_as(url: str, user: str, password: str, items: list[tuple[str, bytes]]) -> list[str]:
    """Publish, then return the server's asynchronous errors (permission violations)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, user=user, password=password, error_cb=on_error, allow_reconnect=False)
    for subject, data in items:
        await nc.publish(subject, data)
    await nc.flush()
    for _ in range(100):  # -ERR arrives after the flush's PONG at the latest
        if len(errors) >= len(items):
            break
        await asyncio.sleep(0.01)
    await nc.close()
    return errors


async def test_strategy_and_daemon_credentials_are_refused_what_their_role_may_not_do(secured_server):
    url = secured_server.url
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:

            async def provision():  # operators create the buckets; a daemon may only use them
                nc = await nats.connect(url, user="risk", password="risk-pw")
                await ensure_buckets(nc.jetstream(), Subjects("test"), 1)
                await nc.close()

            await in_asyncio(provision)
            a = Instance("host-a", root / "a", sim, [url], fleet_extra=CREDS)
            a.environ_extra = {"KS_NATS_PW": "daemon-a-pw"}
            await start_instance(nursery, a)
            await until(lambda: a.daemon.fleet.counters.status_sent > 0)  # its status publish is allowed

            trip = encode(FleetTrip("strat01", "rogue", "strat", "strat-host", 1))
            reset = encode(FleetReset("daemon01", "sneaky", "daemon-a", "host-a", 1))
            errs = await in_asyncio(
                lambda: publish_as(
                    url,
                    "strat",
                    "strat-pw",
                    [("ks.test.trip", trip), ("ks.test.reset", reset), ("$KV.ks_test_latch.trip", trip)],
                )
            )
            assert len(errs) == 3 and all("permissions violation" in e.lower() for e in errs), errs
            errs = await in_asyncio(
                lambda: publish_as(
                    url,
                    "daemon-a",
                    "daemon-a-pw",
                    [("ks.test.reset", reset), ("$KV.ks_test_latch.reset", reset)],
                )
            )
            assert len(errs) == 2 and all("permissions violation" in e.lower() for e in errs), errs
            assert a.state == "armed" and not (await a.events("fleet_trip", n=0))

            # The operator's trip goes through, and the daemon's credentials suffice to ack it.
            op = FleetConfig(
                servers=(url,),
                name="test",
                instance="op",
                silent_after_s=1.0,
                credentials=FleetCredentials(user="risk", password=SecretRef("env", "KS_OP_PW")),
            )
            code, board = await in_asyncio(
                lambda: fleet_trip(
                    op,
                    reason="desk kill",
                    operator="risk",
                    deadline_s=10,
                    environ={"KS_OP_PW": "risk-pw"},
                    on_line=print,
                )
            )
            assert code == 0 and board.by_instance["host-a"].verdict == "flat"
            assert a.state == "tripped"
            # The daemon read the latch with its own credentials (no latch-read errors).
            assert a.daemon.fleet.bus.counters.reconciles > 0
            assert a.daemon.fleet.bus.counters.reconcile_errors == 0
            assert a.daemon.fleet.bus.counters.publish_errors == 0
            nursery.cancel_scope.cancel()
