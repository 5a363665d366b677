"""The shipped alert rules and Grafana dashboard only reference metrics a real daemon exports.

A real ``killswitch run`` child process guards one OX.FUN and one Nado account on the
simulators (127.0.0.1), is tripped with orders resting on both, and is scraped over HTTP; every
metric name in ``contrib/prometheus/alerts.yml`` and ``contrib/grafana/killswitch.json`` must
be in that scrape. ``promtool check rules`` validates the alert file and ``promtool test rules``
runs its unit tests (contrib/prometheus/alerts_test.yml) where promtool is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import textwrap

import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from killswitch.control import ControlClient
from tests.e2e.helpers import REPO, DaemonProcess, child_env, short_tmpdir
from tests.reliability.harness import start_nado, start_ox

ALERTS = REPO / "contrib" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "killswitch.json"
METRIC_NAME = re.compile(r"\b((?:killswitch|process|python)_[a-z0-9_]+)\b")
# Synthesised by Prometheus itself for every target, not exported by the daemon.
FROM_PROMETHEUS = frozenset({"up"})
# Families with no series while nothing is wrong (declared with # TYPE from the start).
ONLY_WHEN_FIRING = frozenset({"killswitch_alarm_active"})


def alert_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    out = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                out.append(node["expr"])
            if isinstance(node.get("query"), str) and "(" in node["query"]:
                out.append(node["query"])  # template variable queries: label_values(metric, label)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(DASHBOARD.read_text()))
    return out


def referenced_names(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC_NAME.findall(e)}


def scrape_index(text: str) -> tuple[set[str], set[str], dict[tuple, float]]:
    families, samples, values = set(), set(), {}
    for fam in text_string_to_metric_families(text):
        families.add(fam.name)
        for s in fam.samples:
            samples.add(s.name)
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples, values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_contrib_files_reference_metrics_and_parse():
    alerts, panels = alert_exprs(), dashboard_exprs()
    assert len(alerts) >= 5 and len(panels) >= 10
    names = referenced_names(alerts)
    for wanted in ("killswitch_tripped", "killswitch_alarm_active", "killswitch_venue_connected",
                   "killswitch_venue_flat"):
        assert wanted in names, wanted
    assert any("absent(up" in e for e in alerts), "no alert for an absent daemon"
    assert {"killswitch_trip_to_first_cancel_seconds_bucket", "killswitch_trip_to_flat_seconds_bucket",
            "killswitch_rule_usage_ratio"} <= referenced_names(panels)


def test_promtool_accepts_the_alert_rules_and_their_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # Alert semantics on synthetic series (contrib/prometheus/alerts_test.yml): fires when, and
    # only when, it should (e.g. a trip not proven flat alerts after 10 s, not at 10 s).
    out = subprocess.run([promtool, "test", "rules", str(ALERTS.with_name("alerts_test.yml"))],
                         capture_output=True, text=True, timeout=60, cwd=ALERTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


async def test_every_metric_in_alerts_and_dashboard_is_exported_by_a_real_daemon():
    with trio.fail_after(60), short_tmpdir() as root:
        async with trio.open_nursery() as nursery:
            ox = await start_ox(nursery)
            nado = await start_nado(nursery)
            port = free_port()
            config = root / "killswitch.yaml"
            config.write_text(textwrap.dedent(f"""\
                daemon:
                  state_dir: {root}/state
                  control_socket: {root}/control.sock
                  tick_interval: 50ms
                  repoll_interval: 300ms
                  cancel_deadline: 3s
                  startup_timeout: 10s
                  log_format: json
                  metrics: {{enabled: true, host: 127.0.0.1, port: {port}}}
                venues:
                """) + ox.venue_yaml() + nado.venue_yaml() + textwrap.dedent("""\
                rules:
                  - {name: max-open, kind: max_open_orders, max: 1000}
                  - {name: drawdown, kind: drawdown, max_drawdown: 50%}
                  - {name: feed-alive, kind: stale_heartbeat, source: {venue: ox-main}, timeout: 30s}
                  - {name: order-rate, kind: order_rate, max: 1000, window: 1s}
                  - {name: operator, kind: manual}
                """))
            proc = DaemonProcess(config, child_env(root, **ox.env(), **nado.env()), root / "daemon.log").start()
            url = f"http://127.0.0.1:{port}/metrics"
            try:
                async with httpx.AsyncClient(timeout=2.0) as client:

                    async def scrape() -> str | None:
                        try:
                            resp = await client.get(url)
                        except httpx.TransportError:
                            return None
                        return resp.text if resp.status_code == 200 else None

                    while True:  # READY: every venue connected and reconciled
                        text = await scrape()
                        if text and "killswitch_up 1.0" in text:
                            break
                        assert proc.proc.poll() is None, proc.log_text()[-4000:]
                        await trio.sleep(0.05)
                    await ox.place(3)
                    nado.place(3)
                    while len(ox.open_orders()) < 3:
                        await trio.sleep(0.02)

                    req = {"op": "trip", "reason": "metrics test", "operator": "pytest"}
                    reply = await trio.to_thread.run_sync(lambda: ControlClient(root / "control.sock").request(req))
                    assert reply["ok"], reply
                    venues = (("venue", "ox-main"),), (("venue", "nado-main"),)
                    while True:  # both venues proven flat, as the histograms report it
                        _, _, values = scrape_index(await scrape() or "")
                        if all(values.get(("killswitch_trip_to_flat_seconds_count", v)) == 1 for v in venues):
                            break
                        await trio.sleep(0.05)
                    assert ox.open_orders() == [] and nado.open_count() == 0
                    text = await scrape()
            finally:
                proc.kill()
                nursery.cancel_scope.cancel()

    families, samples, values = scrape_index(text)
    assert values[("killswitch_tripped", ())] == 1
    for v in venues:
        assert values[("killswitch_venue_flat", v)] == 1
        assert values[("killswitch_trip_to_first_cancel_seconds_count", v)] == 1
        assert values[("killswitch_cancel_round_trip_seconds_count", v)] >= 1
    assert values[("killswitch_event_lag_seconds_count", ())] > 0
    assert ("process_resident_memory_bytes", ()) in values

    referenced = referenced_names(alert_exprs()) | referenced_names(dashboard_exprs())
    missing = sorted(
        name for name in referenced - FROM_PROMETHEUS
        if name not in samples and not (name in ONLY_WHEN_FIRING and name in families)
    )
    assert not missing, f"referenced by contrib/ but not exported: {missing}"
