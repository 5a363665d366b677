"""The fleet over TLS: a nats-server with a certificate from a test CA (made with openssl).
A daemon that trusts the CA trips with the fleet; one that trusts another CA never
connects and raises the bus-loss alarm (no silent fallback to plain text). With mutual TLS
(``verify: true``) a daemon with a client certificate from the trusted CA trips with the
fleet; one without a certificate, or with one from another CA, never connects and alarms."""

from __future__ import annotations

import pytest
import trio

from killswitch.fleet.config import FleetConfig
from killswitch.fleet.natsserver import NatsServer
from killswitch.fleet.operator import fleet_trip
from killswitch.fleet.settings import TlsSettings
from tests.e2e.helpers import short_tmpdir
from tests.fleet.pki import HAVE_OPENSSL, make_ca, make_client_cert, make_server_cert, tls_block
from tests.fleet.world import Instance, in_asyncio, sims, start_all, start_instance, until

if not HAVE_OPENSSL:  # pragma: no cover
    pytest.skip("openssl not installed (needed to make the test certificates)", allow_module_level=True)


@pytest.fixture
def tls_server():
    with short_tmpdir() as root:
        pki = root / "pki"
        pki.mkdir()
        make_ca(pki, "ca")
        make_ca(pki, "other-ca")
        make_server_cert(pki, "ca")
        srv = NatsServer(root / "nats", extra_config=tls_block(pki)).start()
        try:
            srv.wait_ready()
            yield srv, pki
        finally:
            srv.kill()


async def test_fleet_over_tls_trips_and_a_daemon_trusting_another_ca_alarms(tls_server):
    srv, pki = tls_server
    url = f"tls://127.0.0.1:{srv.port}"
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(2) as (sim_a, sim_b), trio.open_nursery() as nursery:
            good = Instance(
                "host-a", root / "a", sim_a, [url], fleet_extra=f"tls: {{ca: {pki / 'ca.pem'}}}\n"
            )
            bad = Instance(
                "host-b",
                root / "b",
                sim_b,
                [url],
                fleet_extra=(
                    f"tls: {{ca: {pki / 'other-ca.pem'}}}\non_bus_loss: {{after: 300ms, action: alarm}}\n"
                ),
            )
            await start_instance(nursery, good)
            await start_instance(nursery, bad)
            await until(lambda: good.daemon.fleet.watch.state.value == "up")
            op = FleetConfig(
                servers=(url,),
                name="test",
                instance="op",
                silent_after_s=1.0,
                tls=TlsSettings(ca_file=str(pki / "ca.pem")),
            )
            code, board = await in_asyncio(
                lambda: fleet_trip(op, reason="tls", operator="risk", deadline_s=10, on_line=print)
            )
            assert board.by_instance["host-a"].verdict == "flat" and good.state == "tripped"
            await until(lambda: "fleet_bus" in bad.daemon.engine.alarms)
            assert bad.daemon.fleet.bus.counters.connects == 0 and bad.state == "armed"
            nursery.cancel_scope.cancel()


@pytest.fixture
def mtls_server():
    with short_tmpdir() as root:
        pki = root / "pki"
        pki.mkdir()
        make_ca(pki, "ca")
        make_ca(pki, "other-ca")
        make_server_cert(pki, "ca")
        for name, ca in (("daemon-a", "ca"), ("risk", "ca"), ("daemon-c", "other-ca")):
            make_client_cert(pki, ca, name)
        srv = NatsServer(root / "nats", extra_config=tls_block(pki, verify=True)).start()
        try:
            srv.wait_ready()
            yield srv, pki
        finally:
            srv.kill()


async def test_mutual_tls_a_trusted_client_cert_trips_and_none_or_a_foreign_one_alarms(mtls_server):
    srv, pki = mtls_server
    url = f"tls://127.0.0.1:{srv.port}"
    ca = pki / "ca.pem"
    alarm_fast = "on_bus_loss: {after: 300ms, action: alarm}\n"
    with trio.fail_after(30), short_tmpdir() as root:
        async with sims(3) as (sim_a, sim_b, sim_c), trio.open_nursery() as nursery:
            good = Instance(
                "host-a",
                root / "a",
                sim_a,
                [url],
                fleet_extra=f"tls: {{ca: {ca}, cert: {pki / 'daemon-a.pem'}, key: {pki / 'daemon-a.key'}}}\n",
            )
            no_cert = Instance(
                "host-b", root / "b", sim_b, [url], fleet_extra=f"tls: {{ca: {ca}}}\n" + alarm_fast
            )
            foreign = Instance(
                "host-c",
                root / "c",
                sim_c,
                [url],
                fleet_extra=(
                    f"tls: {{ca: {ca}, cert: {pki / 'daemon-c.pem'}, key: {pki / 'daemon-c.key'}}}\n"
                    + alarm_fast
                ),
            )
            await start_all(nursery, good, no_cert, foreign)
            await until(lambda: good.daemon.fleet.watch.state.value == "up")
            op = FleetConfig(
                servers=(url,),
                name="test",
                instance="op",
                silent_after_s=1.0,
                tls=TlsSettings(
                    ca_file=str(ca), cert_file=str(pki / "risk.pem"), key_file=str(pki / "risk.key")
                ),
            )
            code, board = await in_asyncio(
                lambda: fleet_trip(op, reason="mtls", operator="risk", deadline_s=10, on_line=print)
            )
            assert code == 0 and board.by_instance["host-a"].verdict == "flat" and good.state == "tripped"
            for inst in (no_cert, foreign):  # refused in the handshake: never connected, alarmed, running
                await until(lambda inst=inst: "fleet_bus" in inst.daemon.engine.alarms)
                assert inst.daemon.fleet.bus.counters.connects == 0
                assert inst.state == "armed" and not inst.exit_codes
            log = srv.log_tail(20000)
            assert "TLS handshake error" in log and "certificate" in log, log[-2000:]
            nursery.cancel_scope.cancel()
