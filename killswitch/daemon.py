"""The supervisor: wires config, venues, engine, executor, audit and the control plane.

Start-up order (fail closed): load the latch -> open the audit log -> start the engine and
executor -> connect every venue (each one authenticates, subscribes and reconciles before
it counts as up; if the latch is TRIPPED the engine re-verifies and sweeps each venue as
its reconcile snapshot arrives) -> READY. A venue that refuses the credentials at first
login stops the daemon with a clear error (exit status 3); one that is merely slow makes
READY degraded after ``startup_timeout`` instead of hanging.
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
from killswitch.config import Config, build_rules, load_config
from killswitch.engine.latch import LatchStore
from killswitch.engine.loop import ApplyRules, Engine
from killswitch.engine.rule_state import RuleStateStore
from killswitch.executor import Executor
from killswitch.logs import SecretRedactor
from killswitch.model import EVERYTHING, HeartbeatReceived, Tick, TripCommand, VenueDisconnected
from killswitch.secrets import SecretError
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
    restarts: int = 0
    last_error: str = ""


class _SetOnStarted:
    """A task_status stand-in: the session's ``started()`` sets an event (and runs a hook once)."""

    def __init__(self, event: trio.Event, on_started: Callable[[], None] | None = None) -> None:
        self._event = event
        self._on_started = on_started

    def started(self, value: object = None) -> None:
        self._event.set()
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
    ) -> None:
        self.config = config
        self.freeze_gc = freeze_gc
        self.clock = clock or Clock()
        self.environ = dict(os.environ if environ is None else environ)
        self.redactor = redactor or SecretRedactor()
        self.handle_signals = handle_signals
        self.services: list[Service] = list(services or [])
        d = config.daemon
        self.store = LatchStore(d.state_dir)
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
        self._nursery: trio.Nursery | None = None
        self._stop_requested = trio.Event()
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
            except SecretError as exc:
                raise StartupError(f"venue {vcfg.name}: {exc}", EXIT_CONFIG) from None
            self.redactor.add(s.reveal() for s in creds.values())
            out[vcfg.name] = make_session(vcfg, creds, self.clock, shared)
        return out

    def _build(self) -> None:
        sessions = self._build_sessions()
        self.venues = {name: VenueRuntime(s) for name, s in sessions.items()}
        latch = self.store.load()
        try:
            self.store.open_intent()  # the trip path then only pwrite()s
        except OSError as exc:
            raise StartupError(f"cannot open the latch in {self.store.state_dir}: {exc}", EXIT_CONFIG) from None
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

    # ------------------------------------------------------------------ run
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> int:
        try:
            self._build()
        except StartupError as exc:
            log.error("startup_failed", error=str(exc))
            return exc.exit_code
        assert self.engine is not None and self.executor is not None
        try:
            self.audit.open()
        except OSError as exc:
            log.error("startup_failed", error=f"cannot open audit log {self.config.daemon.audit_log}: {exc}")
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
                await nursery.start(self.audit.run)
                await nursery.start(self.executor.run)
                await nursery.start(self.engine.run, self.receive)
                nursery.start_soon(self._ticker)
                if self.config.heartbeat_files:
                    nursery.start_soon(self._watch_heartbeat_files)
                if self.handle_signals:
                    await nursery.start(self._signals)
                for service in self.services:
                    await nursery.start(service, self)
                for name in self.venues:
                    nursery.start_soon(self._supervise_venue, name)
                await self._wait_startup()
                task_status.started(self)
                await self._stop_requested.wait()
                await self._graceful_stop()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._final_persist()
        if self.fatal is not None:
            return self.fatal.exit_code
        return EXIT_OK

    async def _wait_startup(self) -> None:
        timeout_s = self.config.daemon.startup_timeout_s
        with trio.move_on_after(timeout_s):
            for rt in self.venues.values():
                await rt.up.wait()
        if self.fatal is not None:
            return
        self.degraded = [n for n, rt in self.venues.items() if not rt.up.is_set()]
        if self.degraded:
            log.error("startup_degraded", venues_not_up=self.degraded, after_s=timeout_s)
            self.audit.record("startup_degraded", venues_not_up=self.degraded, after_s=timeout_s)
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

    async def _supervise_venue(self, name: str) -> None:
        rt = self.venues[name]
        first = True
        while True:
            try:
                if first:
                    await self._start_gated(rt)
                else:
                    await self._nursery_start_venue(rt)
                return  # run() returned: the session ended by itself (stop)
            except AuthError as exc:
                if first and not rt.up.is_set():
                    msg = f"venue {name}: authentication refused ({exc.code or 'no code'}): {exc}"
                    self.fatal = StartupError(msg, EXIT_AUTH)
                    log.error("startup_auth_failed", venue=name, code=exc.code, error=str(exc))
                    self.audit.record("startup_auth_failed", venue=name, code=exc.code, error=str(exc))
                    self.request_stop()
                    return
                rt.last_error = f"auth: {exc}"
            except Exception as exc:  # a session bug: log, report disconnected, restart
                rt.last_error = f"{type(exc).__name__}: {exc}"
                log.error("venue_session_crashed", venue=name, error=rt.last_error)
                await self.send.send(VenueDisconnected(name, f"session crashed: {rt.last_error}",
                                                       self.clock.monotonic_s()))
            first = False
            rt.restarts += 1
            await trio.sleep(VENUE_RESTART_DELAY_S)

    async def _nursery_start_venue(self, rt: VenueRuntime, on_started: Callable[[], None] | None = None) -> None:
        # Called directly (no inner nursery) so a first-login AuthError reaches the
        # supervisor unwrapped; ``started()`` marks the venue up.
        await rt.session.run(self.send, task_status=_SetOnStarted(rt.up, on_started))

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
    async def _signals(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sigs = {signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
        with trio.open_signal_receiver(*sigs) as receiver:
            task_status.started()
            async for signum in receiver:
                if signum == signal.SIGUSR1:
                    await self.send.send(TripCommand(reason="signal", source="signal", operator="SIGUSR1"))
                elif signum == signal.SIGHUP:
                    self._nursery.start_soon(self.reload)
                else:
                    log.info("stop_requested", signal=signal.Signals(signum).name)
                    self.request_stop()

    def request_stop(self) -> None:
        self._stop_requested.set()

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

    async def _reload(self) -> bool:
        self.reloads += 1
        path = self.config.source
        try:
            new = await trio.to_thread.run_sync(load_config, path)
            rules = build_rules(new)
            applies = [hook(new) for hook in self.reload_hooks]
        except Exception as exc:  # ConfigError lists every issue; anything else is a bug
            issues = getattr(exc, "issues", None)
            self.reload_errors = [str(i) for i in issues] if issues else [f"{type(exc).__name__}: {exc}"]
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
                    while not self.engine.all_flat():
                        await trio.sleep(0.01)
                await self.executor.wait_idle()
        log.info("stopping", latch=self.engine.latch.state.value)
        self.audit.record("daemon_stop", latch=self.engine.latch.state.value)

    async def _final_persist(self) -> None:
        if self.engine is not None:
            self.engine.save_rule_state(force=True, durable=True)
        if self.engine is not None and self.engine.latch.tripped:
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
        for name, rt in self.venues.items():
            if name in st["venues"]:
                st["venues"][name]["restarts"] = rt.restarts
                st["venues"][name]["up"] = rt.up.is_set()
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
            parts.append(f"ALARMS {len(st['alarms'])}")
        if self.reload_errors:
            parts.append(f"reload failed ({len(self.reload_errors)} errors), running previous config")
        if self.degraded:
            parts.append(f"degraded: {','.join(self.degraded)} not up")
        return f"{' | '.join(parts)} | {venues}"


async def run_daemon(config_path: str | Path, **kwargs) -> int:
    config = load_config(config_path)
    return await Daemon(config, **kwargs).run()
