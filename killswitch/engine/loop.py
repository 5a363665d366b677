"""The engine: the single task that owns all risk state.

It consumes one bounded channel of events (venue events, executor results, ticks, commands)
and, for each: applies it to the book, feeds the rules that watch it, trips the latch on a
breach, plans cancels and hands them to the executor, sweeps new orders while TRIPPED and
decides, from the venue's own snapshots, when a venue is flat.

The trip path is ordered so nothing slow stands before the first cancel:
``latch (page cache) -> executor.submit -> wait for the first request on the wire (bounded)
-> canonical log line, audit records (trip, then each cancel_plan), fsync of latch (worker
thread)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import structlog
import trio

from killswitch.audit import AuditLog
from killswitch.clock import Clock
from killswitch.engine.latch import Latch, LatchStore, TripRecord, scope_to_dict
from killswitch.engine.plan import CancelPlan, plan_cancels
from killswitch.engine import rule_state
from killswitch.engine.drift import DriftTracker
from killswitch.engine.rule_state import Rebase, RuleStateError, RuleStateStore
from killswitch.engine.state import BookState
from killswitch.model import (
    BackstopObserved,
    BadFrame,
    OrderEntryLockChanged,
    Breach,
    CancelCompleted,
    CancelJobFinished,
    CancelScope,
    CashFlowObserved,
    DeclareCashFlow,
    EVERYTHING,
    EquityObserved,
    EquityUnavailable,
    HeartbeatReceived,
    OpenOrdersSnapshot,
    OrderInfo,
    OrderOpened,
    ResetCommand,
    StreamDriftDetected,
    Tick,
    TripCommand,
    VenueAuthFailed,
    VenueDegraded,
    VenueConnected,
    VenueDisconnected,
    VerifyFailed,
)
from killswitch.observations import Observations
from killswitch.rules.base import Rule
from killswitch.venues.base import VenueCapabilities

log = structlog.get_logger("killswitch.engine")

FEED_ALARM_AFTER_S = 15.0  # a venue down (or never up) this long alarms even without a rule
FIRST_SEND_WAIT_S = 0.05  # bound on how long trip bookkeeping waits for the first cancel send
DRAIN_MAX = 256  # events handled per engine wake-up before it yields to other tasks
VERIFY_ALARM_AFTER = 3  # consecutive failed verifications before a venue is in alarm
UNFLAT_ALARM_AFTER_ROUNDS = 5  # cancel rounds that leave orders open (per snapshot) before an alarm
EQUITY_ALARM_AFTER_S = 5.0  # an account that cannot be valued this long (an asset with no price) alarms
RULE_STATE_SAVE_MIN_S = 0.1  # baselines are written at most this often (and on every tick when changed)
RULE_STATE_MAX_SHARE = 0.05  # snapshotting baselines takes at most this share of the engine's time


def manual_scope_of(rules: Iterable[Rule]) -> CancelScope:
    """What ``killswitch trip`` (no scope given) cancels: the manual rule's action, else everything."""
    for r in rules:
        if getattr(r, "kind", "") == "manual":
            return r.action_scope
    return EVERYTHING


@dataclass(frozen=True, slots=True)
class ApplyRules:
    """Reload: replace the rule set (rules with an unchanged config keep their state)."""

    rules: tuple[Rule, ...]
    source: str = "reload"


@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: int
    venue: str
    trip_id: int
    plan: CancelPlan | None  # None: verification only
    verify: bool = True
    purpose: str = "trip"  # trip | sweep | retry | poll


class ExecutorPort:
    """What the engine needs from the executor (see killswitch.executor.Executor)."""

    def submit(self, job: CancelJob) -> trio.Event:  # pragma: no cover - protocol
        raise NotImplementedError

    def spawn_sync(self, fn: Callable[[], None]) -> None:  # pragma: no cover
        raise NotImplementedError


@dataclass(slots=True)
class VenueProgress:
    trip_id: int
    scope: CancelScope
    tripped_at_s: float
    round_no: int = 0
    job_id: int | None = None  # cancel job in flight
    verify_job_id: int | None = None
    flat: bool = False
    flat_at_s: float | None = None
    first_cancel_s: float | None = None
    next_round_at_s: float | None = None
    last_verify_s: float = 0.0
    verify_failures: int = 0
    pending_sweep: dict[str, OrderInfo] = field(default_factory=dict)
    dry_run_done: bool = False


@dataclass(slots=True)
class EngineCounters:
    events: int = 0
    bad_frames: int = 0
    trips: int = 0
    alerts: int = 0
    cancel_requests: int = 0
    cancel_failures: int = 0
    sweeps: int = 0
    stream_drift: int = 0  # drift polls that found orders the account stream never reported
    max_event_lag_s: float = 0.0
    last_event_lag_s: float = 0.0
    last_trip_to_first_cancel_s: float | None = None
    last_trip_to_flat_s: float | None = None


class Engine:
    def __init__(
        self,
        *,
        rules: Sequence[Rule],
        rule_factory: Callable[[], Sequence[Rule]] | None,
        venues: dict[str, VenueCapabilities],
        latch: Latch,
        store: LatchStore,
        audit: AuditLog,
        executor: ExecutorPort,
        clock: Clock,
        budget: Callable[[str, float], int | None] = lambda venue, now_s: None,
        repoll_interval_s: float = 2.0,
        dry_run: bool = False,
        manual_scope: CancelScope | None = None,
        rule_store: RuleStateStore | None = None,
        reconnect: Callable[[str, str], None] = lambda venue, why: None,
    ) -> None:
        self.state = BookState(tuple(venues))
        self.caps = dict(venues)
        self.latch = latch
        self.store = store
        self.audit = audit
        self.executor = executor
        self.clock = clock
        self.budget = budget
        self.repoll_interval_s = repoll_interval_s
        self.dry_run = dry_run
        # None: derived from the rules, again on every reload and reset (see _set_rules).
        self._manual_scope_override = manual_scope
        self.manual_scope = manual_scope or EVERYTHING
        self.rule_factory = rule_factory
        self.rule_store = rule_store
        self.reconnect = reconnect  # asks a venue session to drop and re-establish its stream
        self.drift = DriftTracker()
        self._equity_unavailable: dict[str, tuple[float, tuple[str, ...]]] = {}  # venue -> (since, assets)
        self._rule_state_saved: tuple = ()
        self._rule_state_saved_s = float("-inf")
        self._rule_state_cache: dict = {}  # per-rule exports, reused while a baseline is unchanged
        self._rule_state_seq = 0
        self._rule_state_min_s = RULE_STATE_SAVE_MIN_S  # grows when snapshots get expensive
        self._rule_state_failed: str | None = None  # a background write's outcome: "" ok, else the error
        self.counters = EngineCounters()
        self.observations = Observations()  # histograms for the metrics endpoint
        self.progress: dict[str, VenueProgress] = {}
        self.alarms: dict[str, str] = {}
        self.backstops: dict[str, BackstopObserved] = {}
        self.locks: dict[str, str] = {}  # venue -> locking | locked | failed | unlocking (order entry)  # venue dead-man's switches, as last reported
        self.alerting: set[str] = set()
        self.loop_iterations = 0  # watchdog: proof the engine makes progress
        self._job_seq = 0
        self._deferred: list[Callable[[], None]] = []
        self._first_sent: list[trio.Event] = []
        self._set_rules(rules)
        # Recorded breach timings for trip latency (monotonic seconds).
        self.trip_started_s: dict[int, float] = {}
        self.started_s: float | None = None

    # ------------------------------------------------------------------ rules
    def _set_rules(self, rules: Iterable[Rule]) -> None:
        self.rules: list[Rule] = list(rules)
        self._by_type: dict[type, list[Rule]] = {}
        for r in self.rules:
            for t in r.watches:
                self._by_type.setdefault(t, []).append(r)
        self._tick_rules = [r for r in self.rules if r.needs_tick]
        self._baseline_rules = [r for r in self.rules if rule_state.has_baseline(r)]
        if self._manual_scope_override is None:
            self.manual_scope = manual_scope_of(self.rules)

    def _apply_rules(self, cmd: ApplyRules) -> None:
        old = {r.name: r for r in self.rules}
        merged = []
        for r in cmd.rules:
            prev = old.get(r.name)
            same = prev is not None and getattr(prev, "config", None) is not None and \
                getattr(prev, "config", None) == getattr(r, "config", None)
            merged.append(prev if same else r)
        # A changed rule keeps its baseline when the fields that define it are unchanged.
        rebases = rule_state.carry(self.rules, merged)
        for rb in rebases:
            self._rebase_rule(old[rb.rule], next(r for r in merged if r.name == rb.rule), rb, cmd.source)
        self._set_rules(merged)
        self.audit.record("rules_applied", source=cmd.source, rules=[r.name for r in merged])
        log.info("rules_applied", source=cmd.source, n_rules=len(merged))

    # ------------------------------------------------------------------ main loop
    async def run(self, receive: trio.MemoryReceiveChannel, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self.on_start()
        task_status.started()
        async for ev in receive:
            self.handle(ev)
            # Drain what is already queued without a scheduler round per event; stop at a
            # trip (first-send wait, deferred work) and after DRAIN_MAX events (fairness).
            for _ in range(DRAIN_MAX):
                if self._first_sent or self._deferred:
                    break
                try:
                    ev = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self.handle(ev)
            if self._first_sent:
                # Let the executor put the first cancel on the wire before bookkeeping.
                waits, self._first_sent = self._first_sent, []
                with trio.move_on_after(FIRST_SEND_WAIT_S):
                    for w in waits:
                        await w.wait()
            if self._deferred:
                work, self._deferred = self._deferred, []
                for fn in work:
                    fn()
            self.save_rule_state()

    def on_start(self) -> None:
        """Restore rule baselines; coming back TRIPPED: every venue in scope is re-verified and swept."""
        self._restore_rule_state()
        if not self.latch.tripped:
            return
        now = self.clock.monotonic_s()
        scope = self.latch.scope() or EVERYTHING
        trip_id = self.latch.trips[-1].trip_id if self.latch.trips else 0
        for venue in self._venues_in(scope):
            self.progress[venue] = VenueProgress(trip_id=trip_id, scope=scope, tripped_at_s=now)
        reason = self.latch.corrupt_reason or "latch persisted as TRIPPED"
        self.audit.record("startup_tripped", reason=reason, trips=[t.trip_id for t in self.latch.trips],
                          scope=scope_to_dict(scope))
        log.warning("startup_tripped", reason=reason, venues=sorted(self.progress))
        if self.latch.problems:
            self._alarm("latch_file", "; ".join(self.latch.problems))

    def handle(self, ev: object) -> None:
        now = self.clock.monotonic_s()
        self.loop_iterations += 1
        t = type(ev)
        if t is Tick:
            self._on_tick(now)
            return
        self.counters.events += 1
        ts_recv = getattr(ev, "ts_recv_s", 0.0)
        if ts_recv:
            lag = now - ts_recv
            self.counters.last_event_lag_s = lag
            self.observations.event_lag.observe(lag)
            if lag > self.counters.max_event_lag_s:
                self.counters.max_event_lag_s = lag

        if t is TripCommand:
            self._manual_trip(ev, now)
            return
        if t is ResetCommand:
            self._reset(ev, now)
            return
        if t is ApplyRules:
            self._apply_rules(ev)
            return
        if t is EquityUnavailable:
            # Alarmed on a tick once it lasts (a start-up waits a moment for its conversion marks).
            since = self._equity_unavailable.get(ev.venue)
            self._equity_unavailable[ev.venue] = (since[0] if since else now, ev.missing)
        elif t is EquityObserved and ev.venue in self._equity_unavailable:
            del self._equity_unavailable[ev.venue]
            if self.alarms.pop(f"equity:{ev.venue}", None) is not None:
                self.audit.record("alarm_cleared", key=f"equity:{ev.venue}")
        if t is DeclareCashFlow:
            self.audit.record("cash_flow_declared", venue=ev.venue, amount=str(ev.amount), operator=ev.operator)
            # In the venue's equity currency, so drawdown rules shift the right series.
            currency = self.state.book(ev.venue).equity_currency or "USD"
            ev = CashFlowObserved(venue=ev.venue, amount=ev.amount, currency=currency,
                                  ts_event_ms=self.clock.wall_ms())
            t = CashFlowObserved
        if t is CancelCompleted:
            self._on_cancel_completed(ev, now)
            return
        if t is BackstopObserved:
            self._on_backstop(ev)
            return
        if t is OrderEntryLockChanged:
            self._on_lock_changed(ev)
            return
        if t is CancelJobFinished:
            self._on_job_finished(ev, now)
            return
        if t is VerifyFailed:
            self._on_verify_failed(ev, now)
            return
        if t is BadFrame:
            self.counters.bad_frames += 1
            log.warning("bad_frame", venue=ev.venue, error=ev.error, sample=ev.sample[:120])
        elif t is VenueAuthFailed:
            self._alarm(f"auth:{ev.venue}", f"{ev.venue}: credentials rejected ({ev.code} {ev.message})")
        elif t is VenueDegraded:
            if ev.active:
                self._alarm(f"{ev.condition}:{ev.venue}", f"{ev.venue}: {ev.message}")
            elif self.alarms.pop(f"{ev.condition}:{ev.venue}", None) is not None:
                self.audit.record("alarm_cleared", key=f"{ev.condition}:{ev.venue}")
        elif t is VenueConnected:
            self.alarms.pop(f"auth:{ev.venue}", None)
            if self.alarms.pop(f"stream_drift:{ev.venue}", None) is not None:  # reconnected and reconciled
                self.audit.record("alarm_cleared", key=f"stream_drift:{ev.venue}")
            self.audit.record("venue_connected", venue=ev.venue)
            self.observations.connected(ev.venue)
        elif t is VenueDisconnected:
            self.audit.record("venue_disconnected", venue=ev.venue, reason=ev.reason)

        drifted: tuple[str, ...] = ()
        if t is OrderOpened:
            self.drift.stream_reported(ev.order.venue, ev.order.venue_order_id, now)
        elif t is OpenOrdersSnapshot and ev.purpose == "poll" and not self.latch.tripped:
            streamed = ev.orders if ev.stream_products is None else \
                [o for o in ev.orders if o.product in ev.stream_products]
            book = self.state.book(ev.venue).orders
            drifted = self.drift.on_poll(ev.venue, streamed, book, ev.ts_event_ms)
            ev = self._keep_recent_pushes(ev, book, now)
        elif t is VenueConnected or t is VenueDisconnected:
            self.drift.forget(ev.venue)
        is_new = self.state.apply(ev, now) if t is not HeartbeatReceived else False
        # An order that *causes* a trip is already in that trip's plan: sweep only orders
        # seen while the latch was already tripped.
        was_tripped = self.latch.tripped

        for rule in self._by_type.get(t, ()):
            try:
                breach = rule.on_event(ev, self.state, now)
            except Exception as exc:  # fail closed: a broken rule trips
                breach = self._rule_error(rule, exc)
            if breach is not None:
                self._on_breach(breach, now)
            elif rule.name in self.alerting:
                self._clear_alert(rule.name)

        if self.latch.tripped:
            if t is OrderOpened and is_new and was_tripped:
                self._sweep(ev.order, now)
            elif t is OpenOrdersSnapshot:
                self._after_snapshot(ev, now)
        if drifted:
            self._on_stream_drift(ev.venue, drifted, now)

    def _keep_recent_pushes(self, ev: OpenOrdersSnapshot, book: dict[str, OrderInfo], now: float) -> OpenOrdersSnapshot:
        """A push can overtake a poll reply computed before its order existed: orders the stream
        reported within the drift grace stay in the book (their close event or the next poll
        settles them), so count rules never lose a fresh order to a stale poll."""
        present = {o.venue_order_id for o in ev.orders}
        keep = [book[oid] for oid in self.drift.recently_reported(ev.venue, now) if oid in book and oid not in present]
        return replace(ev, orders=ev.orders + tuple(keep)) if keep else ev

    def _on_stream_drift(self, venue: str, order_ids: tuple[str, ...], now: float) -> None:
        """The poll saw orders the stream never pushed: alarm, count, reconnect, let rules judge."""
        self.counters.stream_drift += 1
        self._alarm(f"stream_drift:{venue}", f"{venue}: drift poll found {len(order_ids)} open orders the account "
                                             f"stream never reported; reconnecting the stream")
        self.audit.record("stream_drift", venue=venue, n_orders=len(order_ids), order_ids=list(order_ids[:20]))
        try:
            self.reconnect(venue, "stream drift")
        except Exception as exc:  # a broken reconnect hook must not stop the engine
            log.error("reconnect_failed", venue=venue, error=f"{type(exc).__name__}: {exc}")
        ev = StreamDriftDetected(venue, order_ids, now)
        for rule in self._by_type.get(StreamDriftDetected, ()):
            try:
                breach = rule.on_event(ev, self.state, now)
            except Exception as exc:
                breach = self._rule_error(rule, exc)
            if breach is not None:
                self._on_breach(breach, now)

    # ------------------------------------------------------------------ breaches
    def _rule_error(self, rule: Rule, exc: Exception) -> Breach:
        log.error("rule_error", rule=rule.name, error=f"{type(exc).__name__}: {exc}")
        return Breach(
            rule=rule.name, kind=getattr(rule, "kind", "?"), observed=f"exception {type(exc).__name__}",
            threshold="rule must evaluate", scope=getattr(rule, "action_scope", EVERYTHING),
            latch=True, detail=f"rule raised {type(exc).__name__}: {exc} (fail closed)",
        )

    def _on_breach(self, breach: Breach, now: float) -> None:
        if not breach.latch:
            if breach.rule not in self.alerting:
                self.alerting.add(breach.rule)
                self.counters.alerts += 1
                self.audit.record("alert", rule=breach.rule, rule_kind=breach.kind, observed=breach.observed,
                                  threshold=breach.threshold, detail=breach.detail)
                log.warning("alert", rule=breach.rule, kind=breach.kind, observed=breach.observed,
                            threshold=breach.threshold)
            return
        if self.latch.tripped and any(tr.rule == breach.rule for tr in self.latch.trips):
            return  # already latched for this rule; the sweep covers it
        self._trip(rule=breach.rule, kind=breach.kind, reason=breach.detail or "rule breached",
                   observed=breach.observed, threshold=breach.threshold, scope=breach.scope,
                   source="rule", now=now, lock=breach.lock)

    def _clear_alert(self, name: str) -> None:
        self.alerting.discard(name)
        self.audit.record("alert_cleared", rule=name)
        log.info("alert_cleared", rule=name)

    def _manual_trip(self, cmd: TripCommand, now: float) -> None:
        scope = cmd.scope if cmd.scope != EVERYTHING else self.manual_scope
        self._trip(rule="manual", kind="manual", reason=cmd.reason, observed=f"manual trip via {cmd.source}",
                   threshold="-", scope=scope, source=cmd.source, now=now, operator=cmd.operator, lock=cmd.lock)

    def _venues_in(self, scope: CancelScope) -> list[str]:
        return [v for v in self.state.venues() if scope.covers_venue(v)]

    def _trip(self, *, rule: str, kind: str, reason: str, observed: str, threshold: str,
              scope: CancelScope, source: str, now: float, operator: str = "", lock: bool = False) -> None:
        rec = self.latch.trip(rule=rule, kind=kind, reason=reason, observed=observed, threshold=threshold,
                              scope=scope, source=source, ts_wall_ms=self.clock.wall_ms(), operator=operator)
        self.trip_started_s[rec.trip_id] = now
        # Phase 1 of persistence: ~1 µs into the page cache (survives a process crash);
        # the full record is written and fsync'd after the first cancel is on the wire.
        try:
            self.store.mark_tripped(rec.trip_id, rec.ts_wall_ms)
            persisted = True
        except OSError as exc:
            persisted = False
            self._alarm("latch_persist", f"cannot write latch intent: {exc}")
        self.counters.trips += 1
        # Queued first so the audit reads trip, then each venue's cancel_plan (also deferred).
        self._deferred.append(lambda: self._after_trip(rec, operator, persisted))
        for venue in self._venues_in(scope):
            prog = self.progress.get(venue)
            if prog is None or prog.flat or prog.job_id is None:
                merged = scope if prog is None else prog.scope.union(scope)
                self.progress[venue] = prog = VenueProgress(trip_id=rec.trip_id, scope=merged, tripped_at_s=now)
            else:
                prog.scope = prog.scope.union(scope)
                prog.trip_id = rec.trip_id
            self._start_round(venue, prog, now, purpose="trip")
        if lock:  # after the cancels are submitted: locking must not delay the first cancel
            for venue in self._venues_in(scope):
                self._deferred.append(lambda venue=venue: self._request_lock(venue, rec.trip_id))

    # ------------------------------------------------------------------ order-entry lock
    def _request_lock(self, venue: str, trip_id: int) -> None:
        if self.locks.get(venue) in ("locking", "locked"):
            return
        fn = getattr(self.executor, "lock_order_entry", None)
        if self.dry_run or fn is None:
            self.audit.record("would_lock" if self.dry_run else "lock_skipped", venue=venue, trip_id=trip_id)
            return
        self.locks[venue] = "locking"
        self.audit.record("lock_requested", venue=venue, trip_id=trip_id)
        fn(venue, trip_id)

    def _request_unlock(self, cmd: ResetCommand) -> None:
        fn = getattr(self.executor, "unlock_order_entry", None)
        for venue in sorted(self.locks):
            self.audit.record("unlock_requested", venue=venue, operator=cmd.operator, operator_uid=cmd.operator_uid,
                              reason=cmd.reason, source=cmd.source)
            if fn is not None:
                self.locks[venue] = "unlocking"
                fn(venue, cmd.operator)

    def _on_lock_changed(self, ev: OrderEntryLockChanged) -> None:
        if ev.locked:
            key = f"lock_failed:{ev.venue}"
            if ev.ok:
                self.locks[ev.venue] = "locked"
                self.alarms.pop(key, None)
                self.audit.record("order_entry_locked", venue=ev.venue, trip_id=ev.trip_id, detail=ev.message)
                log.critical("order_entry_locked", venue=ev.venue, detail=ev.message)
            else:
                self.locks[ev.venue] = "failed"
                self._alarm(key, f"{ev.venue}: order-entry lock failed: {ev.message}")
            return
        key = f"unlock_failed:{ev.venue}"
        if ev.ok:
            self.locks.pop(ev.venue, None)
            self.alarms.pop(key, None)
            self.alarms.pop(f"lock_failed:{ev.venue}", None)
            self.audit.record("order_entry_unlocked", venue=ev.venue, operator=ev.operator, detail=ev.message)
            log.warning("order_entry_unlocked", venue=ev.venue, operator=ev.operator)
        else:
            self.locks[ev.venue] = "locked"
            self._alarm(key, f"{ev.venue}: order-entry unlock failed: {ev.message}")

    def _after_trip(self, rec: TripRecord, operator: str, persisted: bool) -> None:
        self.audit.record("trip", trip_id=rec.trip_id, rule=rec.rule, rule_kind=rec.kind, reason=rec.reason,
                          observed=rec.observed, threshold=rec.threshold, scope=scope_to_dict(rec.scope),
                          source=rec.source, operator=operator, dry_run=self.dry_run,
                          venues=[v for v, p in self.progress.items() if p.trip_id == rec.trip_id])
        log.critical("TRIP", trip_id=rec.trip_id, rule=rec.rule, kind=rec.kind, observed=rec.observed,
                     threshold=rec.threshold, reason=rec.reason, source=rec.source,
                     venues=sorted(v for v, p in self.progress.items() if p.trip_id == rec.trip_id),
                     dry_run=self.dry_run)
        # Saved even when the intent write failed: the full record is then the only trace.
        # A failed save stays pending in the store and is retried until it succeeds.
        del persisted
        snap = self.store.snapshot(self.latch)  # serialised now, written in a worker thread
        self.executor.spawn_sync(lambda: self.store.write_snapshot(snap))

    # ------------------------------------------------------------------ cancelling
    def _next_job_id(self) -> int:
        self._job_seq += 1
        return self._job_seq

    def _start_round(self, venue: str, prog: VenueProgress, now: float, *, purpose: str) -> None:
        if self.dry_run and prog.dry_run_done and purpose != "sweep":
            return
        caps = self.caps.get(venue)
        if caps is None:
            return
        book = self.state.book(venue)
        prog.round_no += 1
        in_scope = self.state.open_orders(venue, prog.scope)
        # A scope that covers every known order (the usual global trip) needs no second copy.
        all_known = in_scope if len(in_scope) == len(book.orders) else self.state.open_orders(venue)
        plan = plan_cancels(
            venue=venue, scope=prog.scope, in_scope=in_scope, all_known=all_known,
            caps=caps, trusted=book.trusted and book.connected, round_no=prog.round_no,
            budget_available=self.budget(venue, now),
        )
        prog.pending_sweep.clear()
        prog.next_round_at_s = None
        prog.flat = False
        self._submit(venue, prog, plan, purpose)

    def _submit(self, venue: str, prog: VenueProgress, plan: CancelPlan | None, purpose: str) -> None:
        job = CancelJob(self._next_job_id(), venue, prog.trip_id, plan, verify=True, purpose=purpose)
        if plan is not None:
            prog.job_id = job.job_id
            if self.dry_run:
                prog.dry_run_done = True
            trip_id, round_no = prog.trip_id, prog.round_no

            def record() -> None:
                self.audit.record("cancel_plan", venue=venue, trip_id=trip_id, job_id=job.job_id,
                                  round=round_no, purpose=purpose, plan=plan.describe(), dry_run=self.dry_run)

            if purpose == "trip":
                self._deferred.append(record)  # after the first cancel is on the wire
            else:
                record()
        else:
            prog.verify_job_id = job.job_id
        first_sent = self.executor.submit(job)
        if plan is not None and plan.steps and purpose == "trip":
            self._first_sent.append(first_sent)

    def _sweep(self, order: OrderInfo, now: float) -> None:
        prog = self.progress.get(order.venue)
        if prog is None or not prog.scope.covers(order):
            return
        self.counters.sweeps += 1
        prog.flat = False
        if prog.job_id is not None:
            prog.pending_sweep[order.venue_order_id] = order  # picked up when the job ends
            return
        self._launch_sweep(order.venue, prog, [order])

    def _launch_sweep(self, venue: str, prog: VenueProgress, orders: list[OrderInfo]) -> None:
        caps = self.caps[venue]
        plan = plan_cancels(venue=venue, scope=prog.scope, in_scope=orders, all_known=orders, caps=caps,
                            trusted=True, round_no=1, budget_available=self.budget(venue, self.clock.monotonic_s()),
                            sweep=True)
        prog.pending_sweep.clear()
        self._submit(venue, prog, plan, "sweep")

    def _on_cancel_completed(self, ev: CancelCompleted, now: float) -> None:
        self.counters.cancel_requests += 1
        if ev.outcome != "dry_run":
            self.observations.cancel_completed(ev.venue, ev.latency_s)
        if ev.outcome not in ("ok", "dry_run"):
            self.counters.cancel_failures += 1
            log.warning("cancel_not_ok", venue=ev.venue, verb=ev.verb, outcome=ev.outcome, code=ev.code,
                        message=ev.message)
            if ev.outcome == "auth":
                self._alarm(f"auth:{ev.venue}", f"{ev.venue}: cancel refused for auth ({ev.code} {ev.message})")
        self.audit.record("cancel_result", venue=ev.venue, trip_id=ev.trip_id, verb=ev.verb,
                          request_id=ev.request_id, outcome=ev.outcome, code=ev.code, message=ev.message,
                          n_cancelled=len(ev.cancelled_ids), n_gone=len(ev.gone_ids),
                          latency_ms=round(ev.latency_s * 1000, 3))

    def note_first_cancel(self, venue: str, trip_id: int, sent_at_s: float) -> None:
        """Called by the executor (same thread, sync) when a trip's first request is sent."""
        prog = self.progress.get(venue)
        if prog is not None and prog.first_cancel_s is None:
            prog.first_cancel_s = sent_at_s
            started = self.trip_started_s.get(trip_id)
            if started is not None:
                self.counters.last_trip_to_first_cancel_s = sent_at_s - started
                self.observations.first_cancel(venue, sent_at_s - started)

    def _on_job_finished(self, ev: CancelJobFinished, now: float) -> None:
        prog = self.progress.get(ev.venue)
        if prog is None:
            return
        if prog.job_id == ev.job_id:
            prog.job_id = None
            if ev.timed_out:
                self._schedule_retry(ev.venue, prog, now, "cancel round hit its deadline")
            if prog.pending_sweep and self.latch.tripped:
                # Only what is still open: the round may already have removed the rest.
                still_open = self.state.book(ev.venue).orders
                pending = [o for oid, o in prog.pending_sweep.items() if oid in still_open]
                prog.pending_sweep.clear()
                if pending:
                    self._launch_sweep(ev.venue, prog, pending)
        elif prog.verify_job_id == ev.job_id:
            prog.verify_job_id = None

    def _on_verify_failed(self, ev: VerifyFailed, now: float) -> None:
        prog = self.progress.get(ev.venue)
        if prog is None:
            return
        prog.verify_failures += 1
        self.audit.record("verify_failed", venue=ev.venue, error=ev.error, failures=prog.verify_failures)
        if prog.verify_failures >= VERIFY_ALARM_AFTER:
            self._alarm(f"unverified:{ev.venue}",
                        f"{ev.venue}: cannot confirm open orders ({prog.verify_failures} failures: {ev.error})")
        self._schedule_retry(ev.venue, prog, now, ev.error)

    def _schedule_retry(self, venue: str, prog: VenueProgress, now: float, why: str) -> None:
        delay = min(0.1 * (2 ** max(prog.round_no - 1, 0)), 2.0)
        if prog.next_round_at_s is None or prog.next_round_at_s > now + delay:
            prog.next_round_at_s = now + delay
        log.info("cancel_retry_scheduled", venue=venue, in_s=round(delay, 3), round=prog.round_no + 1, why=why)

    def _after_snapshot(self, ev: OpenOrdersSnapshot, now: float) -> None:
        prog = self.progress.get(ev.venue)
        if prog is None:
            return
        prog.last_verify_s = now
        prog.verify_failures = 0
        self.alarms.pop(f"unverified:{ev.venue}", None)
        remaining = self.state.open_orders(ev.venue, prog.scope)
        if not remaining:
            if not prog.flat and prog.job_id is None:
                self.alarms.pop(f"unflat:{ev.venue}", None)
                prog.flat = True
                prog.flat_at_s = now
                prog.round_no = 0
                started = self.trip_started_s.get(prog.trip_id)
                to_flat = (now - started) if started is not None else None
                if to_flat is not None:
                    self.counters.last_trip_to_flat_s = to_flat
                    self.observations.flat(ev.venue, to_flat)
                to_first = (prog.first_cancel_s - started) if (started is not None and prog.first_cancel_s) else None
                self.audit.record("flat", venue=ev.venue, trip_id=prog.trip_id, evidence=f"{ev.purpose} snapshot",
                                  trip_to_first_cancel_ms=None if to_first is None else round(to_first * 1000, 3),
                                  trip_to_flat_ms=None if to_flat is None else round(to_flat * 1000, 3))
                log.info("flat", venue=ev.venue, trip_id=prog.trip_id,
                         trip_to_flat_ms=None if to_flat is None else round(to_flat * 1000, 3))
            return
        prog.flat = False
        if prog.job_id is None and prog.next_round_at_s is None:
            if prog.round_no == 0:
                self._start_round(ev.venue, prog, now, purpose="trip" if ev.purpose == "reconcile" else "retry")
            else:
                if prog.round_no >= UNFLAT_ALARM_AFTER_ROUNDS:
                    # Reachable (the snapshot came back) but the cancels are not taking effect:
                    # keep retrying, and say so loudly.
                    self._alarm(f"unflat:{ev.venue}", f"{ev.venue}: {len(remaining)} orders still open "
                                                      f"after {prog.round_no} cancel rounds")
                self._schedule_retry(ev.venue, prog, now, f"{len(remaining)} orders still open")

    # ------------------------------------------------------------------ ticks
    def _check_feeds(self, now: float) -> None:
        """Fail closed on feeds: a venue that is down is at least an alarm (rules may trip)."""
        if self.started_s is None:
            self.started_s = now
        for venue in self.state.venues():
            b = self.state.book(venue)
            key = f"feed:{venue}"
            if b.connected:
                if key in self.alarms:
                    del self.alarms[key]
                    self.audit.record("alarm_cleared", key=key)
                    log.info("alarm_cleared", key=key)
                continue
            since = b.disconnected_since_s if b.disconnected_since_s is not None else self.started_s
            if now - since >= FEED_ALARM_AFTER_S:
                what = "never connected" if b.last_seen_s is None else "disconnected"
                self._alarm(key, f"{venue}: feed {what} for more than {FEED_ALARM_AFTER_S:g}s")

    def _on_tick(self, now: float) -> None:
        self._check_feeds(now)
        for venue, (since, missing) in self._equity_unavailable.items():
            if now - since >= EQUITY_ALARM_AFTER_S:
                self._alarm(f"equity:{venue}", f"{venue}: equity unknown, no price for {', '.join(missing)} "
                                               f"(drawdown rules count it as missing)")
        self.save_rule_state()
        for rule in self._tick_rules:
            try:
                breach = rule.on_tick(self.state, now)
            except Exception as exc:
                breach = self._rule_error(rule, exc)
            if breach is not None:
                self._on_breach(breach, now)
            elif rule.name in self.alerting:
                self._clear_alert(rule.name)
        if not self.latch.tripped:
            return
        for venue, prog in self.progress.items():
            if prog.job_id is not None:
                continue
            if prog.next_round_at_s is not None and now >= prog.next_round_at_s:
                self._start_round(venue, prog, now, purpose="retry")
            elif prog.verify_job_id is None and now - prog.last_verify_s >= self.repoll_interval_s:
                prog.last_verify_s = now
                self._submit(venue, prog, None, "poll")

    # ------------------------------------------------------------------ reset / status
    def _reset(self, cmd: ResetCommand, now: float) -> None:
        if cmd.unlock:  # also after a plain reset: locks outlive the latch until unlocked
            self._request_unlock(cmd)
        if not self.latch.tripped:
            self.audit.record("reset_noop", operator=cmd.operator, reason=cmd.reason, source=cmd.source)
            log.info("reset_noop", operator=cmd.operator)
            return
        cleared = self.latch.reset(operator=cmd.operator, reason=cmd.reason, ts_wall_ms=self.clock.wall_ms())
        try:
            self.store.save(self.latch, durable=True)
        except OSError as exc:
            self._alarm("latch_persist", f"cannot write latch file: {exc}")
        unflat = [v for v, p in self.progress.items() if not p.flat]
        self.progress.clear()
        self.alerting.clear()
        for key in [k for k in self.alarms if k.startswith(("unverified:", "unflat:", "latch_file"))]:
            del self.alarms[key]
        if self.rule_factory is not None:
            # Fresh rule objects (debounce counters, alerts), but the baselines carry over:
            # a loss just before or just after the reset still counts against the old peak.
            # Only an explicit ``reset --rebase`` restarts them, from the current equity.
            fresh = list(self.rule_factory())
            if cmd.rebase:
                old = {r.name: r for r in self.rules}
                for r in fresh:
                    prev = old.get(r.name)
                    if prev is not None and rule_state.has_baseline(r) and rule_state.has_baseline(prev):
                        rb = Rebase(r.name, f"reset --rebase by {cmd.operator or '?'}", prev.baseline_key(),
                                    r.baseline_key(), prev.export_baseline(0.0))
                        self._rebase_rule(prev, r, rb, "reset")
            else:
                old = {r.name: r for r in self.rules}
                for rb in rule_state.carry(self.rules, fresh):  # only if the key changed: never silently
                    self._rebase_rule(old[rb.rule], next(r for r in fresh if r.name == rb.rule), rb, "reset")
            self._set_rules(fresh)
            self.save_rule_state(force=True, durable=True)
        self.audit.record("reset", operator=cmd.operator, reason=cmd.reason, source=cmd.source, rebase=cmd.rebase,
                          cleared_trips=[t.trip_id for t in cleared], venues_not_confirmed_flat=unflat)
        log.warning("RESET", operator=cmd.operator, reason=cmd.reason, cleared_trips=[t.trip_id for t in cleared],
                    venues_not_confirmed_flat=unflat)

    def _on_backstop(self, ev: BackstopObserved) -> None:
        self.backstops[ev.venue] = ev
        key = f"venue_dms_unavailable:{ev.venue}"
        if ev.unavailable_reason:
            self._alarm(key, f"{ev.venue}: the venue's dead-man's switch is not armed: {ev.unavailable_reason}")
        elif key in self.alarms:
            del self.alarms[key]
            self.audit.record("alarm_cleared", key=key)

    # ------------------------------------------------------------------ rule baselines
    def _wall_offset_s(self) -> float:
        return self.clock.wall_ms() / 1000.0 - self.clock.monotonic_s()

    def _restore_rule_state(self) -> None:
        if self.rule_store is None:
            return
        try:
            stored = self.rule_store.load()
        except RuleStateError as exc:
            self._alarm("rule_state", f"stored rule baselines unusable ({exc}): every drawdown peak restarts "
                                      f"from the current equity")
            return
        if not stored and self._baseline_rules and not self.rule_store.path.exists():
            # First start, or the file was lost: either way the peaks start from the current
            # equity. Loud until a baseline has been written.
            self._alarm("rule_state_missing", f"no stored rule baselines in {self.rule_store.path} (first start, "
                                              f"or the file was lost): drawdown peaks start from the current equity")
        restore, rebases = rule_state.plan_restore(self.rules, stored)
        offset = self._wall_offset_s()
        for rule, data in restore:
            try:
                rule.import_baseline(data, offset)
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                self._alarm(f"rule_state:{rule.name}", f"stored baseline of rule {rule.name} unusable ({exc}): "
                                                       f"it restarts from the current equity")
                continue
            peaks = getattr(rule, "peaks", dict)()
            self.audit.record("rule_state_restored", rule=rule.name, peaks=peaks)
            log.info("rule_state_restored", rule=rule.name, peaks=peaks)
        for rb in rebases:
            self._record_rebase(rb, new_peaks={}, source="startup")
        self._rule_state_saved = self._rule_state_version()

    def _rebase_rule(self, old: Rule, new: Rule, rb: Rebase, source: str) -> None:
        """``new`` replaces ``old`` with a fresh baseline at the current equity of each venue."""
        carry_live = getattr(new, "carry_from", None)
        if carry_live is not None:
            carry_live(old, baseline=False)
        equities = {v: self.state.book(v).equity for v in self.state.venues()
                    if self.state.book(v).equity is not None}
        rebase_to = getattr(new, "rebase_to", None)
        new_peaks = rebase_to(equities, self.clock.monotonic_s(), self.clock.wall_ms()) if rebase_to else {}
        self._record_rebase(rb, new_peaks=new_peaks, source=source)

    def _record_rebase(self, rb: Rebase, *, new_peaks: dict, source: str) -> None:
        old_peaks = {k: v.get("peak") for k, v in ((rb.old_baseline or {}).get("series") or {}).items()
                     if isinstance(v, dict)}
        self.audit.record("rule_state_rebased", rule=rb.rule, reason=rb.reason, source=source,
                          old_key=rb.old_key, new_key=rb.new_key, old_peaks=old_peaks, new_peaks=new_peaks)
        log.warning("rule_state_rebased", rule=rb.rule, reason=rb.reason, source=source,
                    old_peaks=old_peaks, new_peaks=new_peaks)

    def _rule_state_version(self) -> tuple:
        return tuple((r.name, id(r), r.baseline_version) for r in self._baseline_rules)

    def save_rule_state(self, *, force: bool = False, durable: bool = False) -> None:
        """Write baselines when they changed (at most every RULE_STATE_SAVE_MIN_S unless forced).

        The engine only snapshots them (per-rule exports cached while unchanged); encoding
        and the atomic replace run in a worker thread, landing in the page cache (they
        survive a crash of the process). ``durable`` (reset, shutdown) writes here, with
        fsync. A failed write is an alarm, never a crash.
        """
        if self.rule_store is None:
            return
        outcome, self._rule_state_failed = self._rule_state_failed, None
        if outcome:
            self._alarm("rule_state_persist", f"cannot write rule baselines: {outcome}")
            self._rule_state_saved = ()  # try again
        elif outcome == "":
            for key in ("rule_state_persist", "rule_state_missing"):
                if self.alarms.pop(key, None) is not None:
                    self.audit.record("alarm_cleared", key=key)
        version = self._rule_state_version()
        now = self.clock.monotonic_s()
        if not force and (version == self._rule_state_saved or now - self._rule_state_saved_s < self._rule_state_min_s):
            return
        t0 = time.perf_counter()
        data = rule_state.collect(self._baseline_rules, self._wall_offset_s(), self._rule_state_cache)
        # Many long rolling windows make a snapshot cost milliseconds: space them out so the
        # engine spends at most RULE_STATE_MAX_SHARE of its time on them.
        self._rule_state_min_s = max(RULE_STATE_SAVE_MIN_S, (time.perf_counter() - t0) / RULE_STATE_MAX_SHARE)
        self._rule_state_seq += 1
        seq, wall_ms, store = self._rule_state_seq, self.clock.wall_ms(), self.rule_store
        self._rule_state_saved, self._rule_state_saved_s = version, now
        if durable:
            try:
                store.save(data, wall_ms, durable=True, seq=seq)
            except OSError as exc:
                self._alarm("rule_state_persist", f"cannot write rule baselines: {exc}")
                self._rule_state_saved = ()
                return
            for key in ("rule_state_persist", "rule_state_missing"):
                if self.alarms.pop(key, None) is not None:
                    self.audit.record("alarm_cleared", key=key)
            return

        def write() -> None:  # worker thread: it only hands its outcome back
            try:
                store.save(data, wall_ms, seq=seq)
            except OSError as exc:
                self._rule_state_failed = str(exc)
            else:
                self._rule_state_failed = ""

        self.executor.spawn_sync(write)

    def raise_alarm(self, key: str, message: str) -> None:
        """For the daemon's own machinery (audit log, state files): log, audit, status, metrics."""
        self._alarm(key, message)

    def clear_alarm(self, key: str) -> None:
        if self.alarms.pop(key, None) is not None:
            self.audit.record("alarm_cleared", key=key)
            log.info("alarm_cleared", key=key)

    def _alarm(self, key: str, message: str) -> None:
        if self.alarms.get(key) != message:
            self.alarms[key] = message
            self.audit.record("alarm", key=key, message=message)
            log.error("ALARM", key=key, message=message)

    def status(self) -> dict:
        now = self.clock.monotonic_s()
        venues = {}
        for v in self.state.venues():
            b = self.state.book(v)
            p = self.progress.get(v)
            venues[v] = {
                "connected": b.connected,
                "trusted": b.trusted,
                "open_orders": len(b.orders),
                "equity": None if b.equity is None else str(b.equity),
                "equity_currency": b.equity_currency,
                "last_seen_ago_s": None if b.last_seen_s is None else round(now - b.last_seen_s, 3),
                "cancel_state": None if p is None else ("flat" if p.flat else
                                                        ("cancelling" if p.job_id else "pending")),
            }
            if v in self.locks:
                venues[v]["order_entry"] = self.locks[v]
            bs = self.backstops.get(v)
            if bs is not None:
                venues[v]["backstop"] = {"armed": bs.armed, "fires_at_ms": bs.fires_at_ms,
                                         "unavailable_reason": bs.unavailable_reason or None}
        rules = []
        for r in self.rules:
            try:
                st = r.status(self.state, now)
                rules.append({"name": st.name, "kind": st.kind, "observed": st.observed,
                              "threshold": st.threshold, "breached": st.breached,
                              "latch": r.latch})
            except Exception as exc:
                rules.append({"name": r.name, "kind": r.kind, "observed": f"error: {type(exc).__name__}",
                              "threshold": "?", "breached": True, "latch": r.latch})
        c = self.counters
        return {
            "state": self.latch.state.value,
            "dry_run": self.dry_run,
            "trips": [
                {"trip_id": t.trip_id, "rule": t.rule, "kind": t.kind, "reason": t.reason,
                 "observed": t.observed, "threshold": t.threshold, "source": t.source,
                 "operator": t.operator, "ts_wall_ms": t.ts_wall_ms, "scope": scope_to_dict(t.scope)}
                for t in self.latch.trips
            ],
            "last_reset": self.latch.last_reset,
            "venues": venues,
            "rules": rules,
            "alarms": dict(self.alarms),
            "counters": {
                "events": c.events, "bad_frames": c.bad_frames, "trips": c.trips, "alerts": c.alerts,
                "cancel_requests": c.cancel_requests, "cancel_failures": c.cancel_failures, "sweeps": c.sweeps,
                "stream_drift": c.stream_drift,
                "max_event_lag_ms": round(c.max_event_lag_s * 1000, 3),
                "last_trip_to_first_cancel_ms": None if c.last_trip_to_first_cancel_s is None
                else round(c.last_trip_to_first_cancel_s * 1000, 3),
                "last_trip_to_flat_ms": None if c.last_trip_to_flat_s is None
                else round(c.last_trip_to_flat_s * 1000, 3),
            },
        }

    def known_products(self, configured: Iterable[str] = ()) -> frozenset[str]:
        """Products a configured venue lists plus every product the book has seen."""
        out = set(configured)
        for v in self.state.venues():
            b = self.state.book(v)
            out.update(o.product for o in b.orders.values())
            out.update(b.positions)
            out.update(b.marks)
        return frozenset(out)

    def orders_covered(self, scope: CancelScope) -> dict[str, int]:
        """Known open orders a trip with ``scope`` covers, per venue (for the trip reply)."""
        scope = scope if scope != EVERYTHING else self.manual_scope
        return {v: len(self.state.open_orders(v, scope)) for v in self._venues_in(scope)}

    def all_flat(self) -> bool:
        return bool(self.progress) and all(p.flat for p in self.progress.values())

