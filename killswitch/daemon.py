"""The supervisor: wires config, venues, engine, executor, audit and the control plane.

Start-up order (fail closed): claim the state dir (flock) and the control socket -> load
the latch (and latch any SIGUSR1 that came during start-up) -> open the audit log -> start
the engine and executor -> connect every venue (each one authenticates, subscribes and
reconciles before it counts as up; if the latch is TRIPPED the engine re-verifies and sweeps
each venue as its reconcile snapshot arrives) -> READY. A venue that refuses the credentials
at first login is alarmed and retried while the others are guarded (fatal, exit 3, only
with ``require_all_venues``); one that is merely slow makes READY degraded after
``startup_timeout`` instead of hanging. A stop request ends the start-up wait at once.
"""

from __future__ import annotations

import gc
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Mapping

import structlog
import trio

from killswitch.audit import AuditLog
from killswitch.clock import Clock
from killswitch.config import Config, build_rules, check_secrets, load_config
from killswitch.config.reading import DEFAULT_MAX_CONFIG_BYTES
from killswitch.engine.latch import LatchStore
from killswitch.engine.loop import ApplyRules, Engine
from killswitch.engine.rule_state import RuleStateStore
from killswitch.executor import Executor
from killswitch.instance_lock import InstanceLock, InstanceLockError, check_control_socket
from killswitch.logs import SecretRedactor
from killswitch.model import HeartbeatReceived, Tick, TripCommand, VenueAuthFailed, VenueDisconnected
from killswitch.secrets import SecretError
from killswitch.signals import StartupSignals
from killswitch.state_guard import StateGuard
from killswitch.statefile import StateFileError
from killswitch.venues.base import AuthError, VenueSession
from killswitch.venues.registry import make_session, resolve_credentials

log = structlog.get_logger("killswitch.daemon")

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_AUTH = 3
EVENT_CHANNEL_SIZE = 10_000
VENUE_RESTART_DELAY_S = 1.0
STARTUP_CONCURRENCY = 16  # venues connecting + reconciling at once on start-up (see Daemon._start_gated)
STARTUP_SLOT_S = 10.0  # longest a venue that is not up yet keeps its start-up slot
AUTH_RETRY_INITIAL_S = 1.0  # a venue refusing the credentials at start-up is retried after this,
AUTH_RETRY_MAX_S = 60.0  # doubling up to this (a fixed secret is picked up within a minute)


class StartupError(Exception):
    """The daemon cannot start (credentials, secrets, state directory). Exit non-zero."""

    def __init__(self, message: str, exit_code: int = EXIT_AUTH) -> None:
        super().__init__(message)
        self.exit_code = exit_code


Service = Callable[..., Awaitable[None]]  # async fn(daemon, *, task_status)


@dataclass(slots=True)
class VenueRuntime:
    session: VenueSession
    up: trio.Event = field(default_factory=trio.Event)
    settled: trio.Event = field(default_factory=trio.Event)  # up, or its credentials refused
    restarts: int = 0
    last_error: str = ""
    refused_code: str | None = None  # the venue's own code while it refuses the credentials, never up yet
    auth_failures: int = 0


class _SetOnStarted:
    """A task_status stand-in: the session's ``started()`` sets events (and runs a hook once)."""

    def __init__(self, events: tuple[trio.Event, ...], on_started: Callable[[], None] | None = None) -> None:
        self._events = events
        self._on_started = on_started

    def started(self, value: object = None) -> None:
        for event in self._events:
            event.set()
        hook, self._on_started = self._on_started, None
        if hook is not None:
            hook()


def _request_reconnect(session: object, why: str) -> None:
    fn = getattr(session, "request_reconnect", None)
    if fn is not None:
        fn(why)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        sessions: Mapping[str, VenueSession] | None = None,
        redactor: SecretRedactor | None = None,
        handle_signals: bool = True,
        services: list[Service] | None = None,
        freeze_gc: bool = False,
        config_max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
        signals: StartupSignals | None = None,
    ) -> None:
        self.config = config
        self.config_max_bytes = config_max_bytes  # the reload reads with the cap the start did
        self.freeze_gc = freeze_gc
        self.clock = clock or Clock()
        self.environ = dict(os.environ if environ is None else environ)
        self.redactor = redactor or SecretRedactor()
        self.handle_signals = handle_signals
        # Installed by ``killswitch run`` before anything else; else here, at run() (main thread).
        if signals is None and handle_signals:
            signals = StartupSignals()
        self.signals = signals
        self._reload_when_ready = False
        self.services: list[Service] = list(services or [])
        d = config.daemon
        self.store = LatchStore(d.state_dir)
        self.instance_lock = InstanceLock(d.state_dir)
        self.audit = AuditLog(d.audit_log, wall_ms=self.clock.wall_ms)
        self.send, self.receive = trio.open_memory_channel(EVENT_CHANNEL_SIZE)
        self.venues: dict[str, VenueRuntime] = {}
        self._session_override = dict(sessions) if sessions is not None else None
        self.ready = trio.Event()
        self.degraded: list[str] = []
        self.stopping = False
        self.fatal: StartupError | None = None
        self.reload_errors: list[str] = []
        self.reloads = 0
        # Services' reload steps: fn(new_config) -> apply(); raising refuses the whole reload
        # (nothing applied), e.g. a control role naming a user that does not exist.
        self.reload_hooks: list[Callable[[Config], Callable[[], None]]] = []
        self.engine: Engine | None = None
        self.executor: Executor | None = None
        self.state_guard: StateGuard | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
        self._startup_scope = trio.CancelScope()  # cancelled by a stop request: start-up never blocks a stop
        self._startup_gate = trio.Semaphore(STARTUP_CONCURRENCY)
        # Lifecycle listeners (systemd notify): sync callables fn(event, **fields) called on
        # "reloading", "reloaded" (ok=bool) and "stopping". A failing listener is logged, never fatal.
        self.listeners: list[Callable[..., None]] = []

    def _emit(self, event: str, **fields) -> None:
        for fn in list(self.listeners):
            try:
                fn(event, **fields)
            except Exception as exc:  # a notify failure must not break reload or stop
                log.error("listener_failed", listener_event=event, error=f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ construction
    def _build_sessions(self) -> dict[str, VenueSession]:
        if self._session_override is not None:
            return self._session_override
        out: dict[str, VenueSession] = {}
        shared: dict = {"state_dir": self.config.daemon.state_dir}  # + e.g. one OX.FUN REST budget per host
        for vcfg in self.config.venues:
            try:
                creds = resolve_credentials(vcfg, self.environ)
                self.redactor.add(s.reveal() for s in creds.values())
                out[vcfg.name] = make_session(vcfg, creds, self.clock, shared)
            except SecretError as exc:
                raise StartupError(f"venue {vcfg.name}: {exc}", EXIT_CONFIG) from None
        return out

    def _build(self) -> None:
        sessions = self._build_sessions()
        self.venues = {name: VenueRuntime(s) for name, s in sessions.items()}
        try:
            latch = self.store.load()
        except StateFileError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from None
        intent_error: OSError | None = None
        try:
            self.store.remove_stale_temp_files()
            # Preallocated now, before READY: a trip's intent pwrite() never needs disk space.
            self.store.open_intent(latch)
        except StateFileError as exc:
            raise StartupError(str(exc), EXIT_CONFIG) from None
        except OSError as exc:
            # A full or failing disk must not stop the guard: start, alarm, retry (state guard).
            intent_error = exc
            log.error("latch_intent_unavailable", path=str(self.store.intent_path), error=str(exc))
        self._latch_startup_trips(latch)
        rules = build_rules(self.config)
        d = self.config.daemon
        self.executor = Executor(sessions=sessions, send=self.send, audit=self.audit, clock=self.clock,
                                 deadline_s=d.cancel_deadline_s, dry_run=d.dry_run)
        self.engine = Engine(
            rules=rules,
            rule_factory=lambda: build_rules(self.config),
            venues={n: s.capabilities for n, s in sessions.items()},
            latch=latch, store=self.store, audit=self.audit, executor=self.executor, clock=self.clock,
            budget=lambda venue, now: sessions[venue].budget_available(now) if venue in sessions else None,
            repoll_interval_s=d.repoll_interval_s, dry_run=d.dry_run,
            rule_store=RuleStateStore(d.state_dir),
            reconnect=lambda venue, why: _request_reconnect(sessions.get(venue), why),
        )
        self.executor.on_first_cancel = self.engine.note_first_cancel
        self.state_guard = StateGuard(store=self.store, audit=self.audit, engine=self.engine, clock=self.clock)
        if intent_error is not None:
            self.state_guard.intent_open_failed(intent_error)
        self.audit.on_alarm = self._audit_alarm

    # ------------------------------------------------------------------ run
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> int:
        own_handlers = self.signals is not None and not self.signals.installed
        if own_handlers:
            self.signals.install()
        try:
            self._claim_instance()
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))
            return exc.exit_code
        try:
            return await self._run_claimed(task_status)
        finally:
            self.instance_lock.release()
            if self.signals is not None:
                self.signals.stop_forwarding()
                if own_handlers:
                    self.signals.uninstall()

    def _claim_instance(self) -> None:
        """Before anything reaches a venue: this process alone owns the state dir and the socket."""
        try:
            self.instance_lock.acquire()
            if self.instance_lock.pid_error:
                log.warning("instance_lock_pid_unwritten", path=str(self.instance_lock.path),
                            error=self.instance_lock.pid_error)
            check_control_socket(self.config.daemon.control_socket)
        except InstanceLockError as exc:
            self.instance_lock.release()
            raise StartupError(str(exc), EXIT_CONFIG) from None

    async def _run_claimed(self, task_status) -> int:
        try:
            self._build()
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))
            return exc.exit_code
        assert self.engine is not None and self.executor is not None
        try:
            self.audit.open()  # a disk fault is an alarm (records wait in memory), never an exit
        except StateFileError as exc:
            log.error("startup_failed", error=str(exc))
            return EXIT_CONFIG
        self.audit.record("daemon_start", pid=os.getpid(), config=str(self.config.source),
                          latch=self.engine.latch.state.value, venues=sorted(self.venues),
                          rules=[r.name for r in self.engine.rules], dry_run=self.config.daemon.dry_run)
        log.info("daemon_start", config=str(self.config.source), latch=self.engine.latch.state.value,
                 venues=sorted(self.venues), rules=[r.name for r in self.engine.rules],
                 dry_run=self.config.daemon.dry_run)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.signals is not None:
                    token = trio.lowlevel.current_trio_token()
                    self.signals.forward_to(lambda signum: _deliver_soon(token, self._on_signal, signum))
                await nursery.start(self.audit.run)
                await nursery.start(self.executor.run)
                await nursery.start(self.engine.run, self.receive)
                nursery.start_soon(self._ticker)
                await nursery.start(self.state_guard.run, self.config.daemon.tick_interval_s)
                if self.config.heartbeat_files:
                    nursery.start_soon(self._watch_heartbeat_files)
                for service in self.services:
                    await nursery.start(service, self)
                if not self._stop_requested.is_set():  # a SIGTERM already in: connect nothing
                    for name in self.venues:
                        nursery.start_soon(self._supervise_venue, name)
                await self._wait_startup()
                task_status.started(self)
                await self._stop_requested.wait()
                await self._graceful_stop()
                nursery.cancel_scope.cancel()
        finally:
            if self.signals is not None:
                self.signals.stop_forwarding()  # recorded from here on; nothing left to act
            with trio.CancelScope(shield=True):
                await self._final_persist()
        if self.fatal is not None:
            return self.fatal.exit_code
        return EXIT_OK

    async def _wait_startup(self) -> None:
        """Until every venue is up or refuses the credentials, at most ``startup_timeout``; a
        stop request ends the wait at once (and no READY follows)."""
        timeout_s = self.config.daemon.startup_timeout_s
        t0 = trio.current_time()
        with self._startup_scope, trio.move_on_after(timeout_s):
            for rt in self.venues.values():
                await rt.settled.wait()
        if self.fatal is not None or self._stop_requested.is_set():
            return
        self.degraded = [n for n, rt in self.venues.items() if not rt.up.is_set()]
        if self.degraded:
            refused = {n: self.venues[n].refused_code for n in self.degraded if self.venues[n].refused_code}
            after_s = round(trio.current_time() - t0, 3)
            log.error("startup_degraded", venues_not_up=self.degraded, credentials_refused=refused, after_s=after_s)
            self.audit.record("startup_degraded", venues_not_up=self.degraded, credentials_refused=refused,
                              after_s=after_s)
        if self.freeze_gc:
            # Everything built at startup (config, sessions, book after reconcile) moves to
            # the permanent generation: full collections stop re-scanning it, which takes
            # multi-millisecond pauses off the trip path's tail. Standalone process only
            # (tests build many daemons in one interpreter).
            gc.collect()
            gc.freeze()
        self.ready.set()
        self.audit.record("ready", degraded=self.degraded, latch=self.engine.latch.state.value)
        log.info("ready", degraded=self.degraded, latch=self.engine.latch.state.value)
        if self._reload_when_ready:  # a SIGHUP during start-up
            self._reload_when_ready = False
            self._nursery.start_soon(self.reload)

    async def _supervise_venue(self, name: str) -> None:
        rt = self.venues[name]
        first = True
        while True:
            delay_s = VENUE_RESTART_DELAY_S
            try:
                if first:
                    await self._start_gated(rt)
                else:
                    await self._nursery_start_venue(rt)
                return  # run() returned: the session ended by itself (stop)
            except AuthError as exc:
                if not rt.up.is_set():
                    if self.config.daemon.require_all_venues:
                        msg = f"venue {name}: authentication refused ({exc.code or 'no code'}): {exc}"
                        self.fatal = StartupError(msg, EXIT_AUTH)
                        log.error("startup_auth_failed", venue=name, code=exc.code, error=str(exc))
                        self.audit.record("startup_auth_failed", venue=name, code=exc.code, error=str(exc))
                        self.request_stop()
                        return
                    delay_s = await self._credentials_refused(name, rt, exc)
                else:
                    rt.last_error = f"auth: {exc}"
            except Exception as exc:  # a session bug: log, report disconnected, restart
                rt.last_error = f"{type(exc).__name__}: {exc}"
                log.error("venue_session_crashed", venue=name, error=rt.last_error)
                await self.send.send(VenueDisconnected(name, f"session crashed: {rt.last_error}",
                                                       self.clock.monotonic_s()))
            first = False
            rt.restarts += 1
            await trio.sleep(delay_s)

    async def _credentials_refused(self, name: str, rt: VenueRuntime, exc: AuthError) -> float:
        """A venue that has never been up refuses the credentials: the others keep being
        guarded; this one alarms (engine alarm ``auth:<venue>`` with the venue's own code,
        log, audit, status, STATUS=) and is retried with capped backoff. Returns the delay."""
        rt.auth_failures += 1
        rt.refused_code = str(exc.code or "no code")
        rt.last_error = f"credentials refused ({rt.refused_code}): {exc}"
        delay_s = min(AUTH_RETRY_MAX_S, AUTH_RETRY_INITIAL_S * 2 ** (rt.auth_failures - 1))
        log.error("venue_credentials_refused", venue=name, code=rt.refused_code, error=str(exc),
                  attempt=rt.auth_failures, retry_in_s=delay_s)
        self.audit.record("venue_credentials_refused", venue=name, code=rt.refused_code, error=str(exc),
                          attempt=rt.auth_failures, retry_in_s=delay_s)
        await self.send.send(VenueAuthFailed(name, rt.refused_code, str(exc), self.clock.monotonic_s()))
        rt.settled.set()  # start-up does not wait for it
        return delay_s

    async def _nursery_start_venue(self, rt: VenueRuntime, on_started: Callable[[], None] | None = None) -> None:
        # Called directly (no inner nursery) so a first-login AuthError reaches the
        # supervisor unwrapped; ``started()`` marks the venue up.
        await rt.session.run(self.send, task_status=_SetOnStarted((rt.up, rt.settled), on_started))

    async def _start_gated(self, rt: VenueRuntime) -> None:
        """First start of a venue: at most STARTUP_CONCURRENCY venues connect and reconcile at once.

        A reconcile holds the venue's whole open-order reply (raw bytes, parsed JSON, the
        snapshot) until it is applied, and the allocator keeps such a peak as resident memory
        afterwards: 100 accounts x 1000 orders reconciling all at once left the daemon at
        ~240 MB instead of ~150 MB. Parsing is CPU-bound on one thread anyway, so start-up
        is barely slower. The slot is freed when the venue is up, when its session gives up
        (credentials refused), or after STARTUP_SLOT_S (a venue that is down or slow, and
        retrying, never holds up the others).
        """
        await self._startup_gate.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._startup_gate.release()

        async def release_later() -> None:
            await trio.sleep(STARTUP_SLOT_S)
            release()

        if self._nursery is not None:
            self._nursery.start_soon(release_later)
        try:
            await self._nursery_start_venue(rt, release)
        finally:
            release()

    async def _ticker(self) -> None:
        interval = self.config.daemon.tick_interval_s
        while True:
            await trio.sleep(interval)
            await self.send.send(Tick(self.clock.monotonic_s()))

    async def _watch_heartbeat_files(self) -> None:
        mtimes: dict[str, float | None] = {}
        interval = self.config.daemon.tick_interval_s
        while True:
            for source, path in self.config.heartbeat_files.items():
                try:
                    m = Path(path).stat().st_mtime
                except OSError:
                    m = None
                if m is not None and m != mtimes.get(source):
                    await self.send.send(HeartbeatReceived(source, self.clock.monotonic_s()))
                mtimes[source] = m
            await trio.sleep(interval)

    # ------------------------------------------------------------------ signals
    def _latch_startup_trips(self, latch) -> None:
        """SIGUSR1s that came before the engine runs: on disk now, acted on as venues connect.

        The intent record goes in first (before any venue is touched), numbered as the trip
        the engine is about to make of the queued command, so a crash from here on restarts
        TRIPPED; the engine then trips every venue in scope and sweeps each one as its
        reconcile snapshot arrives."""
        pending = self.signals.take_trips() if self.signals is not None else 0
        if not pending:
            return
        try:
            self.store.mark_tripped(latch.next_trip_id, self.clock.wall_ms())
        except OSError as exc:  # the engine's own trip retries the write and alarms
            log.error("latch_intent_failed", error=str(exc))
        log.warning("startup_signal_trip", signal="SIGUSR1", count=pending)
        for _ in range(pending):
            self.send.send_nowait(TripCommand(reason="signal (during start-up)", source="signal", operator="SIGUSR1"))

    def _on_signal(self, signum: int) -> None:
        """In the trio loop (via ``run_sync_soon`` from the handler): no task hop before the engine.
        An exception here would end the trio run, so none escapes."""
        try:
            self._act_on_signal(signum)
        except Exception as exc:  # e.g. the nursery already closed during shutdown
            log.error("signal_handling_failed", signal=signal.Signals(signum).name,
                      error=f"{type(exc).__name__}: {exc}")

    def _act_on_signal(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            cmd = TripCommand(reason="signal", source="signal", operator="SIGUSR1")
            try:
                self.send.send_nowait(cmd)
            except trio.WouldBlock:  # 10k events queued: wait for room, never drop a trip
                self._nursery.start_soon(self.send.send, cmd)
        elif signum == signal.SIGHUP:
            self._nursery.start_soon(self.reopen_state_files)  # logrotate: systemctl reload
            if self.ready.is_set():
                self._nursery.start_soon(self.reload)
            else:
                self._reload_when_ready = True
                log.info("reload_deferred", note="SIGHUP during start-up: reloading once up")
        else:
            log.info("stop_requested", signal=signal.Signals(signum).name)
            self.request_stop()

    def request_stop(self) -> None:
        self._stop_requested.set()
        self._startup_scope.cancel()

    # ------------------------------------------------------------------ state files
    def _audit_alarm(self, key: str, message: str | None) -> None:
        if self.engine is None:
            return
        if message is None:
            self.engine.clear_alarm(key)
        else:
            self.engine.raise_alarm(key, message)

    async def reopen_state_files(self) -> dict:
        """SIGHUP and the ``reopen`` control verb: fresh audit log and intent file at their paths."""
        assert self.state_guard is not None
        return await self.state_guard.reopen()

    # ------------------------------------------------------------------ reload
    async def reload(self) -> bool:
        """Validate the config file again; apply rules on success, keep the old on error."""
        self._emit("reloading")
        ok = False
        try:
            ok = await self._reload()
        finally:
            self._emit("reloaded", ok=ok)
        return ok

    def _load_and_resolve(self, path: Path) -> tuple[Config, list[str]]:
        """Worker thread: the new config, and every secret reference of it that cannot be
        resolved now (a reload that would only fail at the next restart is refused today).
        The messages name references and files, never values; the values are dropped."""
        new = load_config(path, max_bytes=self.config_max_bytes)
        issues = [str(i) for i in check_secrets(new, self.environ, strict_env=True) if i.severity == "error"]
        return new, issues

    async def _reload(self) -> bool:
        self.reloads += 1
        path = self.config.source
        try:
            new, errors = await trio.to_thread.run_sync(self._load_and_resolve, path)
            rules = build_rules(new) if not errors else []
            applies = [hook(new) for hook in self.reload_hooks] if not errors else []
        except Exception as exc:  # ConfigError lists every issue; anything else is a bug
            issues = getattr(exc, "issues", None)
            errors = [str(i) for i in issues] if issues else [f"{type(exc).__name__}: {exc}"]
        if errors:
            self.reload_errors = errors
            log.error("reload_failed", config=str(path), errors=self.reload_errors)
            self.audit.record("reload_failed", config=str(path), errors=self.reload_errors)
            return False
        if {v.name: v for v in new.venues} != {v.name: v for v in self.config.venues}:
            log.warning("reload_venues_changed", note="venue changes take effect on restart")
        self.reload_errors = []
        self.config = new
        for apply in applies:
            apply()
        await self.send.send(ApplyRules(tuple(rules), source="reload"))
        self.audit.record("reload_ok", config=str(path), rules=[r.name for r in rules])
        log.info("reload_ok", config=str(path), rules=[r.name for r in rules])
        return True

    # ------------------------------------------------------------------ stop
    async def _graceful_stop(self) -> None:
        self.stopping = True
        self._emit("stopping")
        d = self.config.daemon
        assert self.engine is not None and self.executor is not None
        with trio.CancelScope(shield=True):
            with trio.move_on_after(d.cancel_deadline_s):
                if d.cancel_on_shutdown and self.fatal is None:
                    if not self.engine.latch.tripped:
                        await self.send.send(TripCommand(reason="shutdown (cancel_on_shutdown)", source="shutdown"))
                    # Only venues that have been up: one that never connected (down, refusing
                    # the credentials) has nothing this process could cancel, and must not hold
                    # the stop for the whole cancel deadline.
                    while not (self.engine.latch.tripped and self._up_venues_flat()):
                        await trio.sleep(0.01)
                    await self.executor.wait_idle()
                elif any(rt.up.is_set() for rt in self.venues.values()):
                    await self.executor.wait_idle()
        log.info("stopping", latch=self.engine.latch.state.value)
        self.audit.record("daemon_stop", latch=self.engine.latch.state.value)

    def _up_venues_flat(self) -> bool:
        progress = self.engine.progress
        return all(name in progress and progress[name].flat
                   for name, rt in self.venues.items() if rt.up.is_set())

    async def _final_persist(self) -> None:
        if self.engine is not None:
            self.engine.save_rule_state(force=True, durable=True)
        if self.engine is not None and (self.engine.latch.tripped or self.store.pending):
            try:
                self.store.save(self.engine.latch, durable=True)
            except OSError as exc:
                log.error("latch_persist_failed", error=str(exc))
        try:
            await self.audit.flush()
        finally:
            self.audit.close()
            self.store.close()

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        assert self.engine is not None
        st = self.engine.status()
        st["ready"] = self.ready.is_set()
        st["degraded"] = list(self.degraded)
        st["reload_errors"] = list(self.reload_errors)
        st["state_files"] = {
            "audit_problem": self.audit.problem, "audit_queued": self.audit.queued,
            "audit_dropped": self.audit.dropped, "audit_reopens": self.audit.reopens,
            "latch_save_error": self.store.save_error, "latch_save_failures": self.store.save_failures,
        }
        for name, rt in self.venues.items():
            if name in st["venues"]:
                st["venues"][name]["restarts"] = rt.restarts
                st["venues"][name]["up"] = rt.up.is_set()
                st["venues"][name]["credentials_refused"] = None if rt.up.is_set() else rt.refused_code
                st["venues"][name]["last_error"] = rt.last_error
        return st

    def status_line(self) -> str:
        """One human line for systemd STATUS=."""
        st = self.status()
        venues = ", ".join(
            f"{n}:{'up' if v['connected'] else 'DOWN'}/{v['open_orders']}"
            for n, v in st["venues"].items()
        )
        parts = [st["state"].upper()]
        if st["dry_run"]:
            parts.append("dry-run")
        if st["alarms"]:
            parts.append(f"ALARMS {len(st['alarms'])}: {', '.join(sorted(st['alarms']))}")
        if self.reload_errors:
            parts.append(f"reload failed ({len(self.reload_errors)} errors), running previous config")
        if self.ready.is_set():
            not_up = [(n, rt) for n, rt in self.venues.items() if not rt.up.is_set()]
            if not_up:
                parts.append("degraded: " + ", ".join(
                    f"{n} credentials refused (code {rt.refused_code})" if rt.refused_code else f"{n} not up"
                    for n, rt in not_up))
        return f"{' | '.join(parts)} | {venues}"


def _deliver_soon(token: trio.lowlevel.TrioToken, fn: Callable[[int], None], signum: int) -> None:
    try:
        token.run_sync_soon(fn, signum)
    except trio.RunFinishedError:  # the loop just ended: nothing left to act
        pass


async def run_daemon(config_path: str | Path, **kwargs) -> int:
    config = load_config(config_path)
    return await Daemon(config, **kwargs).run()
