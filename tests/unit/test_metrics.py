"""Metrics: a per-daemon registry rendered from live state, served over real HTTP on loopback."""

from __future__ import annotations

import dataclasses
import platform

import httpx
import prometheus_client
import trio
from prometheus_client.parser import text_string_to_metric_families

import killswitch
from killswitch.metrics import make_registry, metrics_service, render
from killswitch.model import TripCommand
from killswitch.services import default_services
from killswitch.config import load_config_text
from tests.component.fakes import FakeSession
from tests.e2e.helpers import FAKE_VENUE_YAML, base_yaml, inprocess_daemon, short_tmpdir

PRODUCT = "BTC-USD-SWAP-LIN"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_registry_reflects_state_and_trip():
    with trio.fail_after(15), short_tmpdir() as root:
        session = FakeSession("ox-a")
        session.add(PRODUCT, 3)
        global_before = prometheus_client.generate_latest()
        async with inprocess_daemon(root, [session], []) as daemon:
            registry = make_registry(daemon)
            s = samples(render(registry).decode())
            assert s[("killswitch_up", ())] == 1
            assert s[("killswitch_tripped", ())] == 0
            assert s[("killswitch_venue_connected", (("venue", "ox-a"),))] == 1
            assert s[("killswitch_open_orders", (("venue", "ox-a"),))] == 3
            assert s[("killswitch_rule_observed_count", (("kind", "max_open_orders"), ("rule", "max-open")))] == 3
            assert s[("killswitch_rule_threshold_count", (("kind", "max_open_orders"), ("rule", "max-open")))] == 1000
            assert s[("killswitch_rule_usage_ratio", (("kind", "max_open_orders"), ("rule", "max-open")))] == 0.003
            # Present from the start, before any trip: nothing is waiting to be proven flat.
            assert s[("killswitch_venue_flat", (("venue", "ox-a"),))] == 1
            assert s[("killswitch_build_info", (("python_version", platform.python_version()),
                                                ("version", killswitch.__version__)))] == 1
            assert ("killswitch_trip_to_first_cancel_seconds_count", (("venue", "ox-a"),)) not in s
            assert s[("killswitch_rule_breached", (("kind", "max_open_orders"), ("rule", "max-open")))] == 0

            await daemon.send.send(TripCommand(reason="test", source="test"))
            with trio.fail_after(5):
                while not daemon.engine.all_flat():
                    await trio.sleep(0.01)
            s = samples(render(registry).decode())
            assert s[("killswitch_tripped", ())] == 1
            assert s[("killswitch_trips_total", ())] == 1
            assert s[("killswitch_open_orders", (("venue", "ox-a"),))] == 0
            assert s[("killswitch_venue_flat", (("venue", "ox-a"),))] == 1
            assert s[("killswitch_cancel_requests_total", ())] >= 1
            assert ("killswitch_last_trip_to_first_cancel_seconds", ()) in s
            assert ("killswitch_last_trip_to_flat_seconds", ()) in s
            venue = (("venue", "ox-a"),)
            assert s[("killswitch_trip_to_first_cancel_seconds_count", venue)] == 1
            assert s[("killswitch_trip_to_flat_seconds_count", venue)] == 1
            assert s[("killswitch_trip_to_flat_seconds_bucket", (("le", "+Inf"),) + venue)] == 1
            assert s[("killswitch_cancel_round_trip_seconds_count", venue)] >= 1
            assert 0 < s[("killswitch_trip_to_first_cancel_seconds_sum", venue)] <= s[
                ("killswitch_trip_to_flat_seconds_sum", venue)]
        # Nothing leaked into the process-global registry.
        assert b"killswitch_" not in prometheus_client.generate_latest()
        assert b"killswitch_" not in global_before


async def test_metrics_served_on_loopback_when_enabled():
    with trio.fail_after(15), short_tmpdir() as root:
        yaml_text = base_yaml(root, FAKE_VENUE_YAML, daemon_extra="metrics: {enabled: true, port: 1}\n")
        cfg = load_config_text(yaml_text)
        assert metrics_service in default_services(cfg)
        assert metrics_service not in default_services(load_config_text(base_yaml(root, FAKE_VENUE_YAML)))

        # Port 0 is not a valid config value; serve on an ephemeral port by driving the service directly.
        async with inprocess_daemon(root, [FakeSession("ox-a")], []) as daemon:
            daemon.config = dataclasses.replace(daemon.config, daemon=dataclasses.replace(
                daemon.config.daemon, metrics=dataclasses.replace(daemon.config.daemon.metrics, enabled=True, port=0)))
            async with trio.open_nursery() as nursery:
                await nursery.start(metrics_service, daemon)
                server = daemon.metrics_server
                assert server.host == "127.0.0.1" and server.port > 0
                async with httpx.AsyncClient() as client:
                    resp = await client.get(f"{server.url}/metrics")
                    assert resp.status_code == 200
                    assert resp.headers["content-type"].startswith("text/plain")
                    assert "killswitch_engine_loop_iterations_total" in resp.text
                    assert (await client.get(f"{server.url}/other")).status_code == 404
                nursery.cancel_scope.cancel()


async def test_metrics_bind_failure_does_not_stop_the_daemon():
    with trio.fail_after(15), short_tmpdir() as root:
        async with inprocess_daemon(root, [FakeSession("ox-a")], []) as daemon:
            blocker = trio.socket.socket()
            await blocker.bind(("127.0.0.1", 0))
            blocker.listen(1)
            port = blocker.getsockname()[1]
            daemon.config = dataclasses.replace(daemon.config, daemon=dataclasses.replace(
                daemon.config.daemon, metrics=dataclasses.replace(daemon.config.daemon.metrics, enabled=True,
                                                                  port=port)))
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(metrics_service, daemon)  # returns: logged, not raised
            finally:
                blocker.close()
            assert not daemon.engine.latch.tripped and daemon.ready.is_set()


async def test_every_metric_family_is_exposed_once():
    """A family emitted twice makes the exposition invalid for Prometheus (duplicate # TYPE):
    the scrape of the whole endpoint would fail, not just the repeated series."""
    with trio.fail_after(15), short_tmpdir() as root:
        async with inprocess_daemon(root, [FakeSession("ox-a")], []) as daemon:
            text = render(make_registry(daemon)).decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    duplicated = sorted({t for t in types if types.count(t) > 1})
    assert types and not duplicated, duplicated
