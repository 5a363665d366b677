"""Prometheus metrics, computed at scrape time from the daemon's own state.

A custom collector in a per-daemon ``CollectorRegistry``: nothing is copied into metric
objects on the hot path and the global registry is never touched, so several daemons (or
tests) in one process do not collide. Latency figures are the engine's last measured values
(gauges); histograms would need a hook on the trip path for a handful of samples a year,
so they are left out.

Served on loopback only by default (``metrics: {enabled: true, host, port}``), by a tiny trio
HTTP handler rather than prometheus-client's threaded server (no threads in the daemon).
"""

from __future__ import annotations

from typing import Iterator

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from killswitch.net.http import DAEMON_LIMITS, HttpServer, Request, Response

log = structlog.get_logger("killswitch.metrics")

PREFIX = "killswitch"


def _num(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # Decimal -> float is fine for a dashboard; decisions never read this
    except (TypeError, ValueError, ArithmeticError):
        return None


class DaemonCollector(Collector):
    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        engine = d.engine
        if engine is None:
            return
        now = d.clock.monotonic_s()

        up = GaugeMetricFamily(f"{PREFIX}_up", "1 once the daemon reported READY", value=1 if d.ready.is_set() else 0)
        yield up
        yield GaugeMetricFamily(f"{PREFIX}_tripped", "Latch state: 1 TRIPPED, 0 ARMED",
                                value=1 if engine.latch.tripped else 0)
        yield GaugeMetricFamily(f"{PREFIX}_active_trips", "Trips latched since the last reset",
                                value=len(engine.latch.trips))
        yield GaugeMetricFamily(f"{PREFIX}_alarms", "Active alarms", value=len(engine.alarms))
        yield GaugeMetricFamily(f"{PREFIX}_reload_failed", "1 when the last reload failed (old config runs)",
                                value=1 if d.reload_errors else 0)
        yield GaugeMetricFamily(f"{PREFIX}_dry_run", "1 in dry-run mode", value=1 if engine.dry_run else 0)

        connected = GaugeMetricFamily(f"{PREFIX}_venue_connected", "Venue feed connected", labels=["venue"])
        open_orders = GaugeMetricFamily(f"{PREFIX}_open_orders", "Open orders known per venue", labels=["venue"])
        equity = GaugeMetricFamily(f"{PREFIX}_venue_equity", "Account equity per venue", labels=["venue", "currency"])
        flat = GaugeMetricFamily(f"{PREFIX}_venue_flat", "1 when a tripped venue is confirmed flat", labels=["venue"])
        for venue in engine.state.venues():
            book = engine.state.book(venue)
            connected.add_metric([venue], 1 if book.connected else 0)
            open_orders.add_metric([venue], len(book.orders))
            eq = _num(book.equity)
            if eq is not None:
                equity.add_metric([venue, book.equity_currency or ""], eq)
            prog = engine.progress.get(venue)
            if prog is not None:
                flat.add_metric([venue], 1 if prog.flat else 0)
        yield from (connected, open_orders, equity, flat)
        dms_armed = GaugeMetricFamily(f"{PREFIX}_venue_dms_armed",
                                      "1 while the venue's own dead-man's switch is armed", labels=["venue"])
        dms_fires = GaugeMetricFamily(f"{PREFIX}_venue_dms_fires_at_seconds",
                                      "When the venue's dead-man's switch would fire (unix s)", labels=["venue"])
        for venue, bs in engine.backstops.items():
            dms_armed.add_metric([venue], 1 if bs.armed else 0)
            if bs.fires_at_ms is not None:
                dms_fires.add_metric([venue], bs.fires_at_ms / 1000)
        yield from (dms_armed, dms_fires)

        observed = GaugeMetricFamily(f"{PREFIX}_rule_observed", "Rule's observed value", labels=["rule", "kind"])
        threshold = GaugeMetricFamily(f"{PREFIX}_rule_threshold", "Rule's threshold", labels=["rule", "kind"])
        breached = GaugeMetricFamily(f"{PREFIX}_rule_breached", "1 while the rule is breached", labels=["rule", "kind"])
        for rule in engine.rules:
            try:
                st = rule.status(engine.state, now)
            except Exception:  # the engine trips on a broken rule; the scrape just shows it breached
                breached.add_metric([rule.name, rule.kind], 1)
                continue
            breached.add_metric([st.name, st.kind], 1 if st.breached else 0)
            o, t = _num(getattr(st, "observed_value", None)), _num(getattr(st, "threshold_value", None))
            if o is not None:
                observed.add_metric([st.name, st.kind], o)
            if t is not None:
                threshold.add_metric([st.name, st.kind], t)
        yield from (observed, threshold, breached)

        c = engine.counters
        for name, value, doc in (
            ("events", c.events, "Events handled by the engine"),
            ("bad_frames", c.bad_frames, "Unparseable venue frames"),
            ("trips", c.trips, "Trips since start"),
            ("alerts", c.alerts, "Alert-only breaches since start"),
            ("cancel_requests", c.cancel_requests, "Cancel requests completed"),
            ("cancel_failures", c.cancel_failures, "Cancel requests not confirmed ok"),
            ("sweeps", c.sweeps, "Orders swept while TRIPPED"),
            ("reloads", d.reloads, "Reload attempts (SIGHUP)"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        yield CounterMetricFamily(f"{PREFIX}_engine_loop_iterations", "Engine loop iterations (watchdog progress)",
                                  value=engine.loop_iterations)
        yield GaugeMetricFamily(f"{PREFIX}_event_lag_seconds", "Receive-to-engine lag of the last event",
                                value=c.last_event_lag_s)
        yield GaugeMetricFamily(f"{PREFIX}_event_lag_max_seconds", "Largest receive-to-engine lag since start",
                                value=c.max_event_lag_s)
        for name, value, doc in (
            ("trip_to_first_cancel_seconds", c.last_trip_to_first_cancel_s, "Last trip: breach to first cancel sent"),
            ("trip_to_flat_seconds", c.last_trip_to_flat_s, "Last trip: breach to venue-confirmed flat"),
        ):
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_last_{name}", doc, value=value)
        control = getattr(d, "control", None)
        if control is not None:
            yield CounterMetricFamily(f"{PREFIX}_control_requests", "Control socket requests", value=control.requests)
            yield CounterMetricFamily(f"{PREFIX}_control_refused", "Control connections refused (peer credentials)",
                                      value=control.refused)


def make_registry(daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


async def metrics_service(daemon, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Daemon service: ``GET /metrics`` on the configured (loopback) host/port."""
    cfg = daemon.config.daemon.metrics
    registry = make_registry(daemon)

    async def scrape(req: Request) -> Response:
        return Response(status=200, body=render(registry), content_type=CONTENT_TYPE_LATEST)

    server = HttpServer({("GET", "/metrics"): scrape}, limits=DAEMON_LIMITS)
    daemon.metrics_server = server  # tests and `status` read the bound port from here
    try:
        await server.serve(cfg.host, cfg.port, task_status=task_status)
    except OSError as exc:
        # Metrics are an observer: failing to bind must not stop the kill switch.
        log.error("metrics_bind_failed", host=cfg.host, port=cfg.port, error=str(exc))
        try:
            task_status.started(None)
        except RuntimeError:
            pass  # already started: the listener died later
