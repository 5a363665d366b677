"""Prometheus metrics, computed at scrape time from the daemon's own state.

A custom collector in a per-daemon ``CollectorRegistry``: nothing is copied into metric
objects on the hot path and the global registry is never touched, so several daemons (or
tests) in one process do not collide. Histograms come from the engine's ``Observations``
(plain bucket counts, see ``killswitch.observations``); process and Python metrics from
prometheus-client's collectors registered in the same per-daemon registry.

Names follow Prometheus conventions: base units in the name (``_seconds``, ``_ratio``),
``_total`` on counters, one unit per family. Reference: docs/metrics.md.

Served on loopback only by default (``metrics: {enabled: true, host, port}``), by a tiny trio
HTTP handler rather than prometheus-client's threaded server (no threads in the daemon).
"""

from __future__ import annotations

import os
import platform
from typing import Iterator

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from killswitch import __version__
from killswitch.control.protocol import STATUS_VERSION
from killswitch.net.http import DAEMON_LIMITS, HttpServer, Request, Response
from killswitch.status_page import HEADERS as STATUS_PAGE_HEADERS
from killswitch.status_page import render_status_page

log = structlog.get_logger("killswitch.metrics")

PREFIX = "killswitch"


def _num(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # Decimal -> float is fine for a dashboard; decisions never read this
    except (TypeError, ValueError, ArithmeticError):
        return None


# Rule kind -> the unit of its observed value and threshold (one metric family per unit).
_COUNT_KINDS = frozenset({"max_open_orders", "order_rate", "reject_burst"})


def rule_unit(rule) -> tuple[str, str] | None:
    """``(unit, currency)`` of a rule's ``observed_value`` / ``threshold_value``, or None."""
    kind = rule.kind
    if kind == "drawdown":
        cfg = getattr(rule, "config", None)
        amount = getattr(cfg, "max_drawdown_amount", None)
        if getattr(cfg, "max_drawdown_pct", None) is None and amount is not None:
            return ("amount", getattr(amount, "currency", "") or "")
        return ("ratio", "")
    if kind == "stale_heartbeat":
        return ("seconds", "")
    if kind in _COUNT_KINDS:
        return ("count", "")
    if kind == "max_position":
        return ("ratio", "")  # |position| / limit, the larger of qty and notional
    return None


def _histogram(name: str, doc: str, by_venue: dict, label: str = "venue") -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=[label])
    for key, h in sorted(by_venue.items()):
        fam.add_metric([key], h.cumulative(), sum_value=h.sum_s)
    return fam


class DaemonCollector(Collector):
    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        engine = d.engine
        if engine is None:
            return
        now = d.clock.monotonic_s()
        yield InfoMetricFamily(f"{PREFIX}_build", "killswitch version and Python it runs on",
                               value={"version": __version__, "python_version": platform.python_version()})
        yield from self._state(d, engine, now)
        yield from self._venues(d, engine, now)
        yield from self._rules(engine, now)
        yield from self._counters(d, engine)
        yield from self._latency(engine)
        fleet = getattr(d, "fleet", None)
        if fleet is not None:
            yield from fleet.metrics(PREFIX)

    def _state(self, d, engine, now: float) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_up", "1 once the daemon reported READY", value=1 if d.ready.is_set() else 0)
        yield GaugeMetricFamily(f"{PREFIX}_tripped", "Latch state: 1 TRIPPED, 0 ARMED",
                                value=1 if engine.latch.tripped else 0)
        yield GaugeMetricFamily(f"{PREFIX}_active_trips", "Trips latched since the last reset",
                                value=len(engine.latch.trips))
        yield GaugeMetricFamily(f"{PREFIX}_alarms", "Number of active alarms", value=len(engine.alarms))
        # One series per active alarm (one alarm per condition), all with the same labels:
        # 1 while active, how often it was raised, when it was first and last seen (wall s).
        labels = ["alarm", "kind", "venue"]
        alarm = GaugeMetricFamily(f"{PREFIX}_alarm_active", "1 per active alarm (kind: unverified, unflat, auth, ...)",
                                  labels=labels)
        count = GaugeMetricFamily(f"{PREFIX}_alarm_count", "Occurrences of an active alarm", labels=labels)
        first = GaugeMetricFamily(f"{PREFIX}_alarm_first_seen_seconds", "Wall time an active alarm started",
                                  labels=labels)
        last = GaugeMetricFamily(f"{PREFIX}_alarm_last_seen_seconds", "Wall time an active alarm was last raised",
                                 labels=labels)
        details = engine.alarms.details(now)
        for key in sorted(engine.alarms):
            kind, _, venue = key.partition(":")
            lv = [key, kind, venue]
            alarm.add_metric(lv, 1)
            a = details.get(key)
            if a is not None:
                count.add_metric(lv, a["count"])
                first.add_metric(lv, a["first_seen_wall_ms"] / 1000.0)
                last.add_metric(lv, a["last_seen_wall_ms"] / 1000.0)
        yield from (alarm, count, first, last)
        yield GaugeMetricFamily(f"{PREFIX}_reload_failed", "1 when the last reload failed (old config runs)",
                                value=1 if d.reload_errors else 0)
        yield GaugeMetricFamily(f"{PREFIX}_dry_run", "1 in dry-run mode", value=1 if engine.dry_run else 0)

    def _venues(self, d, engine, now: float) -> Iterator[Metric]:
        connected = GaugeMetricFamily(f"{PREFIX}_venue_connected", "Venue feed connected", labels=["venue"])
        open_orders = GaugeMetricFamily(f"{PREFIX}_open_orders", "Open orders known per venue", labels=["venue"])
        equity = GaugeMetricFamily(f"{PREFIX}_venue_equity", "Account equity per venue", labels=["venue", "currency"])
        flat = GaugeMetricFamily(f"{PREFIX}_venue_flat",
                                 "0 while a trip's cancels on the venue are not yet proven flat by a venue "
                                 "snapshot; 1 otherwise (armed, outside the trip's scope, or proven flat)",
                                 labels=["venue"])
        seen = GaugeMetricFamily(f"{PREFIX}_venue_last_seen_age_seconds",
                                 "Seconds since the last frame from the venue", labels=["venue"])
        reconnects = CounterMetricFamily(f"{PREFIX}_venue_reconnects", "Connections after the first (each "
                                         "followed a lost connection)", labels=["venue"])
        restarts = CounterMetricFamily(f"{PREFIX}_venue_session_restarts",
                                       "Venue sessions restarted by the supervisor", labels=["venue"])
        runtimes = getattr(d, "venues", {}) or {}
        for venue in engine.state.venues():
            book = engine.state.book(venue)
            connected.add_metric([venue], 1 if book.connected else 0)
            open_orders.add_metric([venue], len(book.orders))
            eq = _num(book.equity)
            if eq is not None:
                equity.add_metric([venue, book.equity_currency or ""], eq)
            prog = engine.progress.get(venue)
            flat.add_metric([venue], 0 if (engine.latch.tripped and prog is not None and not prog.flat) else 1)
            if book.last_seen_s is not None:
                seen.add_metric([venue], max(now - book.last_seen_s, 0.0))
            reconnects.add_metric([venue], engine.observations.reconnects(venue))
            rt = runtimes.get(venue)
            restarts.add_metric([venue], getattr(rt, "restarts", 0))
        yield from (connected, open_orders, equity, flat, seen, reconnects, restarts)
        dms_armed = GaugeMetricFamily(f"{PREFIX}_venue_dms_armed",
                                      "1 while the venue's own dead-man's switch is armed", labels=["venue"])
        dms_fires = GaugeMetricFamily(f"{PREFIX}_venue_dms_fires_at_seconds",
                                      "When the venue's dead-man's switch would fire (unix s)", labels=["venue"])
        for venue, bs in engine.backstops.items():
            dms_armed.add_metric([venue], 1 if bs.armed else 0)
            if bs.fires_at_ms is not None:
                dms_fires.add_metric([venue], bs.fires_at_ms / 1000)
        yield from (dms_armed, dms_fires)

    def _rules(self, engine, now: float) -> Iterator[Metric]:
        labels = ["rule", "kind"]
        breached = GaugeMetricFamily(f"{PREFIX}_rule_breached", "1 while the rule is breached", labels=labels)
        usage = GaugeMetricFamily(f"{PREFIX}_rule_usage_ratio",
                                  "Observed value / threshold (1 = at the limit; drawdown: drawdown / max)",
                                  labels=labels)
        observed: dict[str, GaugeMetricFamily] = {}
        threshold: dict[str, GaugeMetricFamily] = {}
        for unit, doc in (("ratio", "a fraction (0.05 = 5%)"), ("seconds", "seconds"),
                          ("count", "a count (orders, events in the window)"), ("amount", "an amount of currency")):
            extra = ["currency"] if unit == "amount" else []
            observed[unit] = GaugeMetricFamily(f"{PREFIX}_rule_observed_{unit}", f"Rule's observed value, {doc}",
                                               labels=labels + extra)
            threshold[unit] = GaugeMetricFamily(f"{PREFIX}_rule_threshold_{unit}", f"Rule's threshold, {doc}",
                                                labels=labels + extra)
        for rule in engine.rules:
            try:
                st = rule.status(engine.state, now)
            except Exception:  # the engine trips on a broken rule; the scrape just shows it breached
                breached.add_metric([rule.name, rule.kind], 1)
                continue
            breached.add_metric([st.name, st.kind], 1 if st.breached else 0)
            o, t = _num(getattr(st, "observed_value", None)), _num(getattr(st, "threshold_value", None))
            if o is not None and t:
                usage.add_metric([st.name, st.kind], o / t)
            unit = rule_unit(rule)
            if unit is None:
                continue
            key = [st.name, st.kind] + ([unit[1]] if unit[0] == "amount" else [])
            if o is not None:
                observed[unit[0]].add_metric(key, o)
            if t is not None:
                threshold[unit[0]].add_metric(key, t)
        yield breached
        yield usage
        yield from observed.values()
        yield from threshold.values()

    def _counters(self, d, engine) -> Iterator[Metric]:
        c = engine.counters
        for name, value, doc in (
            ("events", c.events, "Events handled by the engine"),
            ("bad_frames", c.bad_frames, "Unparseable venue frames"),
            ("trips", c.trips, "Trips since start"),
            ("alerts", c.alerts, "Alert-only breaches since start"),
            ("cancel_requests", c.cancel_requests, "Cancel requests completed"),
            ("cancel_failures", c.cancel_failures, "Cancel requests not confirmed ok"),
            ("swept_orders", c.sweeps, "Orders seen while TRIPPED and cancelled by a sweep"),
            ("stream_drift", c.stream_drift, "Drift polls that found orders the account stream never reported"),
            ("reloads", d.reloads, "Reload attempts (SIGHUP)"),
            ("engine_loop_iterations", engine.loop_iterations, "Engine loop iterations (watchdog progress)"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        audit, store = d.audit, d.store
        yield GaugeMetricFamily(f"{PREFIX}_audit_unwritable", "1 while the audit log cannot be written",
                                value=1 if audit.problem else 0)
        yield GaugeMetricFamily(f"{PREFIX}_audit_queued", "Audit records held in memory, not yet written",
                                value=audit.queued)
        yield CounterMetricFamily(f"{PREFIX}_audit_dropped", "Audit records dropped from a full in-memory queue",
                                  value=audit.dropped)
        yield CounterMetricFamily(f"{PREFIX}_audit_reopens", "Audit log reopened (rotation, deletion, reopen verb)",
                                  value=audit.reopens)
        yield CounterMetricFamily(f"{PREFIX}_latch_save_failures", "Failed latch.json saves (retried)",
                                  value=store.save_failures)
        control = getattr(d, "control", None)
        yield CounterMetricFamily(f"{PREFIX}_control_requests", "Control socket requests",
                                  value=getattr(control, "requests", 0))
        yield CounterMetricFamily(f"{PREFIX}_control_refused", "Control connections refused (peer credentials)",
                                  value=getattr(control, "refused", 0))

    def _latency(self, engine) -> Iterator[Metric]:
        c, obs = engine.counters, engine.observations
        yield _histogram(f"{PREFIX}_trip_to_first_cancel_seconds",
                         "Trip (breach or command) to the first cancel request on the wire, per venue",
                         obs.trip_to_first_cancel)
        yield _histogram(f"{PREFIX}_trip_to_flat_seconds",
                         "Trip to the venue's own snapshot showing nothing in scope, per venue", obs.trip_to_flat)
        yield _histogram(f"{PREFIX}_cancel_round_trip_seconds",
                         "One cancel request, sent to reply (or timeout), per venue", obs.cancel_round_trip)
        lag = HistogramMetricFamily(f"{PREFIX}_event_lag_seconds", "Venue frame received to handled by the engine")
        lag.add_metric([], obs.event_lag.cumulative(), sum_value=obs.event_lag.sum_s)
        yield lag
        yield GaugeMetricFamily(f"{PREFIX}_event_lag_max_seconds", "Largest receive-to-engine lag since start",
                                value=c.max_event_lag_s)
        for name, value, doc in (
            ("trip_to_first_cancel_seconds", c.last_trip_to_first_cancel_s, "Last trip: breach to first cancel sent"),
            ("trip_to_flat_seconds", c.last_trip_to_flat_s, "Last trip: breach to venue-confirmed flat"),
        ):
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_last_{name}", doc, value=value)


def make_registry(daemon) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon))
    # process_* (CPU, memory, fds, start time) and python_* (GC, version), in this registry only.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


async def metrics_service(daemon, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Daemon service: ``GET /metrics`` and the HTML ``GET /status`` on the configured (loopback) host/port."""
    cfg = daemon.config.daemon.metrics
    registry = make_registry(daemon)

    async def scrape(req: Request) -> Response:
        return Response(status=200, body=render(registry), content_type=CONTENT_TYPE_LATEST)

    async def status_page(req: Request) -> Response:
        st = {"status_version": STATUS_VERSION, "pid": os.getpid(), **daemon.status()}
        html = render_status_page(st, now_ms=daemon.clock.wall_ms())
        return Response(status=200, body=html.encode(), content_type="text/html; charset=utf-8",
                        headers=dict(STATUS_PAGE_HEADERS))

    # GET only: nothing served here can change the daemon's state.
    server = HttpServer({("GET", "/metrics"): scrape, ("GET", "/status"): status_page}, limits=DAEMON_LIMITS)
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
