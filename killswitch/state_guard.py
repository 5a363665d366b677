"""Keeps the state files honest while the daemon runs (the daemon's own faults, issue #11).

A small periodic task, off the trip path:

- a ``latch.json`` save that failed (full disk, EIO) is retried with backoff until it
  succeeds; the ``latch_persist`` alarm is up while a save is pending or the intent file
  cannot be opened, and clears once the latch is on disk again;
- ``latch.intent`` deleted or replaced while open (inode check) is recreated with the
  current latch's record and alarmed once (``latch_intent_replaced``); a TRIPPED latch whose
  ``latch.json`` vanished is saved again and alarmed once (``latch_file_replaced``);
- ``reopen()`` (SIGHUP, the ``reopen`` control verb, logrotate's postrotate) switches the
  audit log and the intent file to fresh files at their paths and clears the
  "replaced" alarms (the operator asked for it).

The audit log checks itself on every flush (:mod:`killswitch.audit`); its alarms reach the
engine through ``AuditLog.on_alarm`` (wired by the daemon).
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from killswitch.audit import ALARM_REPLACED
from killswitch.statefile import StateFileError

log = structlog.get_logger("killswitch.state_guard")

CHECK_INTERVAL_S = 1.0  # at most; the daemon's tick interval when that is shorter
ALARM_PERSIST = "latch_persist"
ALARM_INTENT_REPLACED = "latch_intent_replaced"
ALARM_LATCH_REPLACED = "latch_file_replaced"


class StateGuard:
    def __init__(self, *, store, audit, engine, clock, offload=None) -> None:
        self.store = store
        self.audit = audit
        self.engine = engine
        self.clock = clock
        self._offload = offload or trio.to_thread.run_sync
        self.intent_error: str | None = None

    def intent_open_failed(self, exc: BaseException) -> None:
        self.intent_error = f"cannot open the trip intent {self.store.intent_path}: {exc}"

    async def check(self) -> None:
        store, engine = self.store, self.engine
        latch = engine.latch
        try:
            why = store.check_intent(latch)
        except (OSError, StateFileError) as exc:
            self.intent_error = f"cannot open the trip intent {store.intent_path}: {exc}"
        else:
            if why is not None and self.intent_error is None:
                engine.raise_alarm(ALARM_INTENT_REPLACED,
                                   f"trip intent {store.intent_path} was {why} while open; recreated it")
            self.intent_error = None
        if latch.tripped and store.on_disk and not store.pending and not store.path.exists():
            # latch.json vanished while TRIPPED: save it again (through the retry path), alarmed
            # once. Not before the first save: a first trip's snapshot waits for its first cancel.
            store.snapshot(latch)
            store.save_error = f"{store.path} disappeared while TRIPPED; saving it again"
            engine.raise_alarm(ALARM_LATCH_REPLACED, f"latch file {store.path} disappeared while TRIPPED; "
                                                     f"saved it again")
        if store.retry_due(self.clock.monotonic_s()):
            await self._offload(store.retry_pending)
        problem = self.intent_error or (store.save_error if store.pending else None)
        if problem is not None:
            engine.raise_alarm(ALARM_PERSIST, problem)
        elif ALARM_PERSIST in engine.alarms:
            engine.clear_alarm(ALARM_PERSIST)

    async def run(self, interval_s: float, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(min(interval_s, CHECK_INTERVAL_S))
            try:
                await self.check()
            except Exception as exc:  # a bug here must never stop the daemon
                log.error("state_guard_failed", error=f"{type(exc).__name__}: {exc}")

    async def reopen(self) -> dict[str, Any]:
        """Reopen the audit log and the intent file at their paths (explicit, not an alarm)."""
        audit_ok = await self.audit.reopen()
        result: dict[str, Any] = {"audit_log": str(self.audit.path), "audit_ok": audit_ok,
                                  "audit_problem": self.audit.problem,
                                  "intent": str(self.store.intent_path), "intent_ok": True}
        try:
            self.store.reopen_intent(self.engine.latch)
            self.intent_error = None
        except (OSError, StateFileError) as exc:
            self.intent_error = f"cannot reopen the trip intent {self.store.intent_path}: {exc}"
            result.update(intent_ok=False, intent_problem=self.intent_error)
        for key in (ALARM_REPLACED, ALARM_INTENT_REPLACED, ALARM_LATCH_REPLACED):
            self.engine.clear_alarm(key)
        self.audit.record("state_files_reopened", **result)
        log.info("state_files_reopened", **result)
        return result
