"""The executor: runs cancel plans against venue sessions, and verifies.

Each job runs in its own task inside a shielded deadline (``move_on_after(t, shield=True)``)
so a shutdown cannot interrupt a cancel in flight. The steps of a plan run concurrently.
Every request is audited the moment it is on the wire (the session calls ``on_sent``) and
again with its outcome. Then the job reports ``CancelJobFinished`` and fetches the venue's
own open-orders snapshot: the only evidence the engine accepts for "flat".

The executor decides nothing: retries, escalation and sweeps are the engine's (pure) job.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import structlog
import trio

from killswitch.audit import AuditLog
from killswitch.clock import Clock
from killswitch.engine.loop import CancelJob
from killswitch.engine.plan import CANCEL_ALL, CANCEL_ORDERS, CANCEL_PRODUCTS, CancelStep
from killswitch.model import (
    CancelAttempted,
    CancelCompleted,
    CancelJobFinished,
    OpenOrdersSnapshot,
    OrderEntryLockChanged,
    VerifyFailed,
)
from killswitch.venues.base import OrderEntryLock, VenueSession

LOCK_DEADLINE_S = 30.0  # approvals wait out a venue cool-down (Hyperliquid: ~5 s) and verify

log = structlog.get_logger("killswitch.executor")


class Executor:
    def __init__(
        self,
        *,
        sessions: dict[str, VenueSession],
        send: trio.MemorySendChannel,
        audit: AuditLog,
        clock: Clock,
        deadline_s: float = 10.0,
        dry_run: bool = False,
        on_first_cancel: Callable[[str, int, float], None] | None = None,
        offload: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self._offload = offload or trio.to_thread.run_sync
        self.sessions = sessions
        self.send = send
        self.audit = audit
        self.clock = clock
        self.deadline_s = deadline_s
        self.dry_run = dry_run
        self.on_first_cancel = on_first_cancel
        self._nursery: trio.Nursery | None = None
        self.jobs_started = 0
        self.jobs_running = 0
        self.idle = trio.Event()
        self.idle.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # ---- ExecutorPort ----------------------------------------------------------------
    def submit(self, job: CancelJob) -> trio.Event:
        first_sent = trio.Event()
        assert self._nursery is not None, "executor not started"
        self.jobs_started += 1
        self.jobs_running += 1
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        self._nursery.start_soon(self._run_job, job, first_sent)
        return first_sent

    def spawn_sync(self, fn: Callable[[], None]) -> None:
        assert self._nursery is not None, "executor not started"
        self._nursery.start_soon(self._run_sync, fn)

    async def _run_sync(self, fn: Callable[[], None]) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self._offload(fn)
            except OSError as exc:
                log.error("background_sync_failed", error=str(exc))

    # ---- order-entry lock (venue capability, see venues.base.OrderEntryLock) ----------
    def lock_order_entry(self, venue: str, trip_id: int) -> None:
        assert self._nursery is not None, "executor not started"
        self._nursery.start_soon(self._run_lock, venue, True, trip_id, "")

    def unlock_order_entry(self, venue: str, operator: str) -> None:
        assert self._nursery is not None, "executor not started"
        self._nursery.start_soon(self._run_lock, venue, False, None, operator)

    async def _run_lock(self, venue: str, lock: bool, trip_id: int | None, operator: str) -> None:
        session = self.sessions.get(venue)
        ok, message = False, "this venue has no order-entry lock"
        with trio.move_on_after(max(self.deadline_s, LOCK_DEADLINE_S), shield=True) as scope:
            if isinstance(session, OrderEntryLock):
                try:
                    if lock:
                        message = await session.lock_order_entry(trip_id=trip_id or 0)
                    else:
                        message = await session.unlock_order_entry(operator=operator)
                    ok = True
                except Exception as exc:
                    message = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            ok, message = False, "deadline exceeded"
        with trio.CancelScope(shield=True):
            await self.send.send(OrderEntryLockChanged(venue, lock, ok, message, trip_id, operator,
                                                       self.clock.monotonic_s()))

    async def wait_idle(self) -> None:
        await self.idle.wait()

    # ---- jobs ------------------------------------------------------------------------
    async def _run_job(self, job: CancelJob, first_sent: trio.Event) -> None:
        try:
            with trio.move_on_after(self.deadline_s, shield=True) as scope:
                if job.plan is not None:
                    await self._run_plan(job, first_sent)
                    await self.send.send(CancelJobFinished(job.venue, job.job_id, False, self.clock.monotonic_s()))
                    if job.verify and not self.dry_run:
                        await self._verify(job)
                else:
                    await self._verify(job)
                    await self.send.send(CancelJobFinished(job.venue, job.job_id, False, self.clock.monotonic_s()))
            if scope.cancelled_caught:
                log.error("cancel_job_deadline", venue=job.venue, job_id=job.job_id, deadline_s=self.deadline_s)
                self.audit.record("cancel_job_deadline", venue=job.venue, job_id=job.job_id,
                                  trip_id=job.trip_id, deadline_s=self.deadline_s)
                with trio.CancelScope(shield=True):
                    await self.send.send(CancelJobFinished(job.venue, job.job_id, True, self.clock.monotonic_s()))
        finally:
            first_sent.set()
            self.jobs_running -= 1
            if self.jobs_running == 0:
                self.idle.set()

    async def _run_plan(self, job: CancelJob, first_sent: trio.Event) -> None:
        plan = job.plan
        assert plan is not None
        session = self.sessions.get(job.venue)
        if not plan.steps:
            first_sent.set()
            return
        if self.dry_run or session is None:
            for step in plan.steps:
                self.audit.record("would_cancel" if self.dry_run else "cancel_skipped", venue=job.venue,
                                  trip_id=job.trip_id, job_id=job.job_id, verb=step.verb,
                                  products=list(step.products), n_orders=len(step.orders),
                                  reason="dry_run" if self.dry_run else "no session for venue")
                await self.send.send(CancelCompleted(job.venue, job.trip_id, step.verb, f"job{job.job_id}",
                                                     "dry_run" if self.dry_run else "unknown",
                                                     message="dry run: nothing sent" if self.dry_run
                                                     else "no session"))
            first_sent.set()
            return

        def on_sent(att: CancelAttempted) -> None:
            now = self.clock.monotonic_s()
            if not first_sent.is_set():
                first_sent.set()
                if self.on_first_cancel is not None and job.purpose == "trip":
                    self.on_first_cancel(job.venue, job.trip_id, att.ts_sent_s or now)
            self.audit.record("cancel_sent", venue=att.venue, trip_id=job.trip_id, job_id=job.job_id,
                              verb=att.verb, request_id=att.request_id, n_orders=att.n_orders,
                              products=list(att.products), purpose=job.purpose, **att.detail)

        async def run_step(step: CancelStep) -> None:
            started = self.clock.monotonic_s()
            try:
                if step.verb == CANCEL_ORDERS:
                    results = await session.cancel_orders(step.orders, trip_id=job.trip_id, on_sent=on_sent)
                elif step.verb == CANCEL_PRODUCTS:
                    results = await session.cancel_products(step.products, include_triggers=step.include_triggers,
                                                            trip_id=job.trip_id, on_sent=on_sent)
                elif step.verb == CANCEL_ALL:
                    results = await session.cancel_all_orders(include_triggers=step.include_triggers,
                                                              trip_id=job.trip_id, on_sent=on_sent)
                else:  # pragma: no cover - planner only emits the three verbs
                    raise ValueError(step.verb)
            except Exception as exc:  # a session bug must not lose the trip: unknown outcome
                log.error("session_cancel_raised", venue=job.venue, verb=step.verb,
                          error=f"{type(exc).__name__}: {exc}")
                results = [CancelCompleted(job.venue, job.trip_id, step.verb, f"job{job.job_id}", "unknown",
                                           message=f"{type(exc).__name__}: {exc}",
                                           latency_s=self.clock.monotonic_s() - started)]
            for r in results:
                await self.send.send(r)

        if len(plan.steps) == 1:
            await run_step(plan.steps[0])  # inline: one task hop less before the first send
            return
        async with trio.open_nursery() as nursery:
            for step in plan.steps:
                nursery.start_soon(run_step, step)

    async def _verify(self, job: CancelJob) -> None:
        session = self.sessions.get(job.venue)
        if session is None:
            return
        try:
            orders = await session.fetch_open_orders()
        except Exception as exc:
            await self.send.send(VerifyFailed(job.venue, f"{type(exc).__name__}: {exc}", self.clock.monotonic_s()))
            return
        await self.send.send(OpenOrdersSnapshot(job.venue, tuple(orders), None,
                                                "verify" if job.plan is not None else "poll",
                                                self.clock.wall_ms(), self.clock.monotonic_s()))
