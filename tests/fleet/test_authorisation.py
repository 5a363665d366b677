"""Authorisation by the bus: a nats-server with the reference permissions
(killswitch.fleet.serverconf). A daemon's credentials trip, ack, publish status and read the
latch, but cannot reset; an operator's can do both; a trip-only user's can trip and read the
board but not reset; a strategy's can do neither. Each user reads replies only under its own
inbox prefix (``inbox_prefix: _INBOX.<user>``), and cannot subscribe to another's."""

from __future__ import annotations

import asyncio

import nats
import pytest
import trio

from killswitch.fleet.bus import ensure_buckets
from killswitch.fleet.config import FleetConfig, FleetCredentials
from killswitch.fleet.messages import FleetReset, FleetTrip, TripAck, encode
from killswitch.fleet.natsserver import NatsServer
from killswitch.fleet.operator import EXIT_BUS, fleet_reset, fleet_status, fleet_trip
from killswitch.fleet.serverconf import User, authorization_block
from killswitch.fleet.subjects import Subjects
from killswitch.secrets import SecretRef
from tests.e2e.helpers import short_tmpdir
from tests.fleet.world import Instance, in_asyncio, sims, start_instance, until

USERS = [
    User("daemon-a", "daemon-a-pw", "daemon", "host-a"),
    User("risk", "risk-pw", "operator"),
    User("oncall", "oncall-pw", "trip"),
    User("strat", "strat-pw", "strategy"),
]
CREDS = "credentials: {user: daemon-a, password: {env: KS_NATS_PW}}\ninbox_prefix: _INBOX.daemon-a\n"
ENV = {"KS_NATS_PW": "daemon-a-pw", "KS_OP_PW": "risk-pw", "KS_ONCALL_PW": "oncall-pw"}


def cli_config(url: str, user: str, env_key: str) -> FleetConfig:
    """What an operator's ``-c operator.yaml`` resolves to for ``user``."""
    return FleetConfig(
        servers=(url,),
        name="test",
        instance="op",
        silent_after_s=1.0,
        credentials=FleetCredentials(user=user, password=SecretRef("env", env_key)),
        inbox_prefix=Subjects.user_inbox(user),
    )


async def provision(url: str) -> None:
    """Operators create the buckets; daemons and trip users may only use them."""
    nc = await nats.connect(url, user="risk", password="risk-pw", inbox_prefix="_INBOX.risk")
    await ensure_buckets(nc.jetstream(), Subjects("test"), 1)
    await nc.close()


async def start_daemon(nursery, root, sim, url: str) -> Instance:
    a = Instance("host-a", root / "a", sim, [url], fleet_extra=CREDS)
    a.environ_extra = ENV
    await start_instance(nursery, a)
    await until(lambda: a.daemon.fleet.counters.status_sent > 0)  # its status publish is allowed
    return a


@pytest.fixture
def secured_server():
    with short_tmpdir() as root:
        srv = NatsServer(root / "nats", authorization=authorization_block("test", USERS)).start()
        try:
            srv.wait_ready()
            yield srv
        finally:
            srv.kill()


async def status_until(cfg: FleetConfig, done) -> list[str]:
    """``status --fleet`` as ``cfg``'s user (exit 0 every time) until its lines satisfy ``done``."""
    while True:
        lines: list[str] = []
        code = await in_asyncio(lambda lines=lines: fleet_status(cfg, environ=ENV, on_line=lines.append))
        assert code == 0, lines
        if done(lines):
            return lines
        await trio.sleep(0.05)


async def publish_as(
    url: str, user: str, password: str, items: list[tuple[str, bytes]], subscribe: tuple[str, ...] = ()
) -> list[str]:
    """Publish (and subscribe), then return the server's asynchronous errors (permission violations)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(
        url,
        user=user,
        password=password,
        error_cb=on_error,
        allow_reconnect=False,
        inbox_prefix=Subjects.user_inbox(user),
    )
    for subject, data in items:
        await nc.publish(subject, data)
    for subject in subscribe:
        await nc.subscribe(subject)
    await nc.flush()
    for _ in range(100):  # -ERR arrives after the flush's PONG at the latest
        if len(errors) >= len(items) + len(subscribe):
            break
        await asyncio.sleep(0.01)
    await nc.close()
    return errors


async def test_strategy_and_daemon_credentials_are_refused_what_their_role_may_not_do(secured_server):
    url = secured_server.url
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            await in_asyncio(lambda: provision(url))
            a = await start_daemon(nursery, root, sim, url)

            trip = encode(FleetTrip("strat01", "rogue", "strat", "strat-host", 1))
            reset = encode(FleetReset("daemon01", "sneaky", "daemon-a", "host-a", 1))
            forged = encode(TripAck("fid01", "host-b", "flat", 1, ("ox",), 1.0, 2.0, 1))
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
                    [("ks.test.reset", reset), ("$KV.ks_test_latch.reset", reset),
                     # an ack in another instance's name: acks carry the instance in the subject
                     ("ks.test.ack.fid01.host-b", forged), ("ks.test.ack.fid01", forged)],
                )
            )
            assert len(errs) == 4 and all("permissions violation" in e.lower() for e in errs), errs
            assert a.state == "armed" and not (await a.events("fleet_trip", n=0))

            # The operator's trip goes through, and the daemon's credentials suffice to ack it.
            op = cli_config(url, "risk", "KS_OP_PW")
            code, board = await in_asyncio(
                lambda: fleet_trip(
                    op, reason="desk kill", operator="risk", deadline_s=10, environ=ENV, on_line=print
                )
            )
            assert code == 0 and board.by_instance["host-a"].verdict == "flat"
            assert a.state == "tripped"
            # The daemon read the latch with its own credentials (no latch-read errors).
            assert a.daemon.fleet.bus.counters.reconciles > 0
            assert a.daemon.fleet.bus.counters.reconcile_errors == 0
            assert a.daemon.fleet.bus.counters.publish_errors == 0
            nursery.cancel_scope.cancel()


async def test_a_trip_only_user_trips_the_fleet_and_reads_the_board_but_its_reset_is_refused(secured_server):
    url = secured_server.url
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            await in_asyncio(lambda: provision(url))
            a = await start_daemon(nursery, root, sim, url)
            oncall = cli_config(url, "oncall", "KS_ONCALL_PW")
            code, board = await in_asyncio(
                lambda: fleet_trip(
                    oncall, reason="pager", operator="bot", deadline_s=10, environ=ENV, on_line=print
                )
            )
            assert code == 0 and board.by_instance["host-a"].verdict == "flat" and a.state == "tripped"
            # The board: the instance's status after the trip lands a status period later.
            lines = await status_until(oncall, lambda ls: any(ln.startswith("host-a  TRIPPED") for ln in ls))
            assert lines[0].startswith("fleet test: TRIPPED") and "by bot" in lines[0], lines

            # Its reset is refused by the server, promptly (no retry until the deadline), and the
            # fleet stays tripped; so is a raw publish on the reset subject.
            lines = []
            t0 = trio.current_time()
            code = await in_asyncio(
                lambda: fleet_reset(
                    oncall, reason="x", operator="bot", deadline_s=10, environ=ENV, on_line=lines.append
                )
            )
            assert code == EXIT_BUS and trio.current_time() - t0 < 1.5, lines  # the request timeout is 2 s
            assert any("refused" in line and "permissions violation" in line.lower() for line in lines), lines
            reset = encode(FleetReset("oncall01", "sneaky", "bot", "pager", 1))
            errs = await in_asyncio(
                lambda: publish_as(
                    url, "oncall", "oncall-pw", [("ks.test.reset", reset), ("$KV.ks_test_latch.reset", reset)]
                )
            )
            assert len(errs) == 2 and all("permissions violation" in e.lower() for e in errs), errs
            sent = a.daemon.fleet.counters.status_sent
            await until(lambda: a.daemon.fleet.counters.status_sent >= sent + 2)  # a reset would show by now
            assert a.state == "tripped" and not a.audit_events("fleet_reset")
            nursery.cancel_scope.cancel()


async def test_no_user_can_subscribe_to_another_users_inbox_while_trips_acks_and_status_work(secured_server):
    url = secured_server.url
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(1) as (sim,), trio.open_nursery() as nursery:
            await in_asyncio(lambda: provision(url))
            a = await start_daemon(nursery, root, sim, url)
            others = ("_INBOX.risk.>", "_INBOX.>", "_INBOX.daemon-b.x")
            for user, pw in (("daemon-a", "daemon-a-pw"), ("oncall", "oncall-pw"), ("strat", "strat-pw")):
                errs = await in_asyncio(lambda u=user, p=pw: publish_as(url, u, p, [], subscribe=others))
                assert len(errs) == 3 and all(
                    "permissions violation for subscription" in e.lower() for e in errs
                ), (
                    user,
                    errs,
                )
            errs = await in_asyncio(
                lambda: publish_as(url, "risk", "risk-pw", [], subscribe=("_INBOX.oncall.>",))
            )
            assert len(errs) == 1 and "permissions violation" in errs[0].lower(), errs
            # Nobody may publish into an inbox either (a forged JetStream answer).
            errs = await in_asyncio(
                lambda: publish_as(url, "daemon-a", "daemon-a-pw", [("_INBOX.risk.x", b"{}")])
            )
            assert len(errs) == 1 and "permissions violation" in errs[0].lower(), errs

            # Meanwhile every role's own inbox works: the daemon reads the latch, the operator
            # trips (acks on ks.test.ack.<id>.<instance>, not an inbox) and reads the board.
            op = cli_config(url, "risk", "KS_OP_PW")
            code, board = await in_asyncio(
                lambda: fleet_trip(
                    op, reason="inbox", operator="risk", deadline_s=10, environ=ENV, on_line=print
                )
            )
            assert code == 0 and board.by_instance["host-a"].verdict == "flat"
            lines = await status_until(op, lambda ls: any(ln.startswith("host-a  TRIPPED") for ln in ls))
            assert lines[0].startswith("fleet test: TRIPPED"), lines
            assert a.daemon.fleet.bus.counters.reconciles > 0
            assert a.daemon.fleet.bus.counters.reconcile_errors == 0
            nursery.cancel_scope.cancel()
