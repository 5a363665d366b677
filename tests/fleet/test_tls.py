"""The fleet over TLS: a nats-server with a certificate from a test CA (made with openssl).
A daemon that trusts the CA trips with the fleet; one that trusts another CA never
connects and raises the bus-loss alarm (no silent fallback to plain text)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest
import trio

from killswitch.fleet.config import FleetConfig
from killswitch.fleet.natsserver import NatsServer
from killswitch.fleet.operator import fleet_trip
from killswitch.fleet.settings import TlsSettings
from tests.e2e.helpers import short_tmpdir
from tests.fleet.world import Instance, in_asyncio, sims, start_instance, until

if shutil.which("openssl") is None:  # pragma: no cover
    pytest.skip("openssl not installed (needed to make the test certificates)", allow_module_level=True)


def make_ca(d, name: str) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.pem"),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
        ],
        check=True,
        capture_output=True,
    )


def make_server_cert(d, ca: str) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(d / "srv.key"),
            "-out",
            str(d / "srv.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(d / "srv.csr"),
            "-CA",
            str(d / f"{ca}.pem"),
            "-CAkey",
            str(d / f"{ca}.key"),
            "-CAcreateserial",
            "-out",
            str(d / "srv.pem"),
            "-days",
            "1",
            "-extfile",
            str(d / "ext.cnf"),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def tls_server():
    with short_tmpdir() as root:
        pki = root / "pki"
        pki.mkdir()
        make_ca(pki, "ca")
        make_ca(pki, "other-ca")
        make_server_cert(pki, "ca")
        srv = NatsServer(
            root / "nats",
            extra_config=textwrap.dedent(f"""\
            tls {{ cert_file: "{pki / "srv.pem"}", key_file: "{pki / "srv.key"}" }}"""),
        ).start()
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
